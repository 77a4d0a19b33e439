"""Benchmark for issue 2: ssgan vs the supervised baseline on the same splits.

    python bench/modes.py --out bench/results            # digits-20 x 5 seeds, MNIST-100 x 3 epochs x 3 seeds
    python bench/modes.py --only digits --seeds 5

Every (dataset, seed) pair is trained in both modes with split_seed = train.seed = seed, so both modes
see the same labeled examples. Runs are tracked in OUT/mlflow.db (experiment "bench-modes"); the
table goes to OUT/modes.md and the raw numbers to OUT/modes.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.config import load_config  # noqa: E402
from ssgan.tracking.run import run_training  # noqa: E402

from script import run_main  # noqa: E402  (bench/script.py)

BENCHES = {
    # name: (config, overrides, default seeds)
    "digits-20": ("configs/digits-20.yaml", [], 5),
    "mnist-100 (3 epochs)": ("configs/mnist-100.yaml", ["train.epochs=3"], 3),
    "mnist-100-fast (3 epochs)": ("configs/mnist-100-fast.yaml", ["train.epochs=3"], 3),
}
ONLY = {"digits": "digits-20", "mnist": "mnist-100 (3 epochs)", "mnist-fast": "mnist-100-fast (3 epochs)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--only", choices=list(ONLY), help="run one benchmark")
    ap.add_argument("--seeds", type=int, help="override the number of seeds")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override for every run (repeatable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"

    results_path = out / "modes.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    for name, (config, overrides, n_seeds) in BENCHES.items():
        if args.only and name != ONLY[args.only]:
            continue
        rows = []
        for seed in range(args.seeds or n_seeds):
            for mode in ("ssgan", "supervised"):
                cfg = load_config(ROOT / config, [*overrides, *args.overrides, f"mode={mode}", f"data.split_seed={seed}",
                                                  f"train.seed={seed}", f"tracking.uri={uri}",
                                                  "tracking.experiment=bench-modes", "tracking.log_model=false",
                                                  f"tracking.run_name={name}-{mode}-{seed}"])
                s = run_training(cfg, progress=False)
                rows.append({k: s[k] for k in ("mode", "split_seed", "labels", "test_accuracy", "test_macro_f1",
                                               "wall_clock_seconds", "split_hash", "run_id")})
                print(f"{name:22s} seed {seed} {mode:10s} acc {s['test_accuracy']:.4f}  "
                      f"{s['wall_clock_seconds']:.1f}s", flush=True)
        results[name] = {"rows": rows, "hardware": _hardware()}
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    (out / "modes.md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    lines = ["| benchmark | mode | test accuracy (mean ± std) | per seed | gain over supervised | s / run |",
             "|---|---|---|---|---|---|"]
    for name, res in results.items():
        acc = {m: [r["test_accuracy"] for r in res["rows"] if r["mode"] == m] for m in ("ssgan", "supervised")}
        secs = {m: [r["wall_clock_seconds"] for r in res["rows"] if r["mode"] == m] for m in ("ssgan", "supervised")}
        gain = statistics.mean(acc["ssgan"]) - statistics.mean(acc["supervised"])
        for m in ("ssgan", "supervised"):
            a = acc[m]
            sd = statistics.stdev(a) if len(a) > 1 else 0.0
            g = f"{100 * gain:+.1f} points" if m == "ssgan" else ""
            lines.append(f"| {name} | {m} | {100 * statistics.mean(a):.1f} ± {100 * sd:.1f} % | "
                         f"{', '.join(f'{100 * v:.1f}' for v in a)} | {g} | {statistics.mean(secs[m]):.0f} |")
    hw = {res["hardware"] for res in results.values()}
    return "\n".join(lines) + f"\n\nHardware: {'; '.join(sorted(hw))}.\n"


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"


if __name__ == "__main__":
    run_main(main)
