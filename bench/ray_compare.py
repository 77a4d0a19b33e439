"""A comparison with `--ray local` against the same comparison run one run after another, in one session.

    python bench/ray_compare.py --epochs 10 --out bench/results/ray-compare

Trains the digits comparison (configs/digits-20.yaml, budgets 20,50 x 5 seeds x ssgan, supervised,
label_spreading, self_training: 40 runs) twice into one SQLite store: sequentially, and as Ray tasks of a
local Ray instance (one CPU and one torch thread per task), both with OMP_NUM_THREADS=1 so each run uses one
thread. Reports both wall times, their ratio and Ray's cost per task ((Ray's wall time x CPUs - the
sequential wall time) / runs: starting Ray, creating runs, scheduling, the workers' imports), and writes
OUT/ray_compare.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def compare(store: str, out: Path, epochs: int, seeds: int, budgets: str, *extra: str) -> tuple[float, dict]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ssgan", "-q", "compare", "-c", str(ROOT / "configs/digits-20.yaml"),
                    "--labels", budgets, "--seeds", str(seeds), "--set", f"train.epochs={epochs}",
                    "--set", "tracking.sample_every=0", "--set", f"tracking.uri={store}", "--out", str(out), *extra],
                   cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True)
    return time.perf_counter() - started, json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--labels", default="20,50")
    ap.add_argument("--out", default="bench/results/ray-compare")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        seq, seq_summary = compare(store, Path(tmp) / "seq", args.epochs, args.seeds, args.labels)
        ray, ray_summary = compare(store, Path(tmp) / "ray", args.epochs, args.seeds, args.labels, "--ray", "local")
    runs = len(ray_summary["runs"])
    slots = os.cpu_count() or 1
    same = {(r["method"], r["budget"], r["split_seed"]): r["test_accuracy"] for r in seq_summary["runs"]} == \
        {(r["method"], r["budget"], r["split_seed"]): r["test_accuracy"] for r in ray_summary["runs"]}
    result = {"runs": runs, "epochs": args.epochs, "sequential_s": round(seq, 1), "ray_local_s": round(ray, 1),
              "ratio": round(ray / seq, 2), "cpus": slots,
              # what Ray costs beyond the sequential comparison's work spread over the CPUs, per task (starting
              # Ray, the driver creating runs, scheduling, the workers' imports)
              "overhead_per_task_s": round((ray * slots - seq) / runs, 2), "same_numbers": same}
    (out / "ray_compare.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{runs} runs, {args.epochs} epochs: sequential {seq:.1f} s, --ray local {ray:.1f} s ({ray / seq:.2f}x) on "
          f"{slots} CPUs; Ray's cost beyond the sequential work spread over the CPUs: "
          f"{result['overhead_per_task_s']:.2f} s per task; the same numbers run by run: {same}", flush=True)


if __name__ == "__main__":
    main()
