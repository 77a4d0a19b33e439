"""The full MNIST-100 recipe (configs/mnist-100.yaml, 300 epochs) on a GPU, for one split seed.

    python bench/gpu_recipe.py --seed 0 --root ../shared/datasets --out bench/results/gpu [--set KEY=VALUE]

The same `fit` as `ssgan train`, without MLflow (the lent GPU machines have no MLflow): every epoch's
metrics go to OUT/mnist-100-seedN.jsonl as they come, the run's summary (test accuracy and error of the
EMA weights after the last epoch: no model selection on the test set; wall time; steps/s) to
OUT/mnist-100-seedN.json. `bench/import_runs.py` logs both into an MLflow store afterwards.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.config import load_config, to_dict  # noqa: E402
from ssgan.data import load_split  # noqa: E402
from ssgan.evaluate import evaluate  # noqa: E402
from ssgan.train import check_plan, fit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="split seed = training seed")
    ap.add_argument("--root", default="../shared/datasets", help="folder holding MNIST/raw")
    ap.add_argument("--config", default=str(ROOT / "configs/mnist-100.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench/results/gpu")
    args = ap.parse_args()
    cfg = load_config(args.config, [f"data.root={args.root}", f"data.split_seed={args.seed}",
                                    f"train.seed={args.seed}", *args.overrides])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{Path(args.config).stem}-seed{args.seed}"
    split = load_split(cfg.data)
    steps, total = check_plan(cfg, split)
    log = (out / f"{name}.jsonl").open("w")
    start = time.perf_counter()

    def on_epoch(epoch: int, metrics: dict, _generator) -> None:
        log.write(json.dumps({"epoch": epoch, "elapsed_s": round(time.perf_counter() - start, 2), **metrics}) + "\n")
        log.flush()

    result = fit(cfg, split, on_epoch=on_epoch, progress=False)
    ev = evaluate(result.classifier, split.x_test, split.y_test, split.class_names)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine() + " CPU"
    summary = {"seed": args.seed, "device": device, "torch": torch.__version__, "overrides": args.overrides,
               "epochs_done": len(result.history), "stop_reason": result.stop_reason, "cuda_graph": result.cuda_graph,
               "train_seconds": round(result.seconds, 1), "steps": steps * len(result.history),
               "steps_per_s": round(steps * len(result.history) / result.seconds, 1),
               "test_accuracy": ev.accuracy, "test_error_pct": round(100 * (1 - ev.accuracy), 3),
               "test_accuracy_raw_last_epoch": result.history[-1].get("test_accuracy_raw") if result.history else None,
               "config": to_dict(cfg)}
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{name}: {summary['epochs_done']} epochs in {summary['train_seconds']} s "
          f"({summary['steps_per_s']} steps/s, cuda_graph {result.cuda_graph}); "
          f"test error {summary['test_error_pct']} % (EMA weights)", flush=True)


if __name__ == "__main__":
    main()
