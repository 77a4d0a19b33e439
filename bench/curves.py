"""Test error per epoch of one or more runs' per-epoch logs (bench/gpu_recipe.py's .jsonl files), on one figure.

    python bench/curves.py bench/results/cpu-mnist-100-full/mnist-100-seed0.jsonl=CPU \
        bench/results/gpu/mnist-100-seed0.jsonl=H200 --out docs/mnist-100-full-recipe.png

Each FILE may carry a legend label after "=". The error (100 - test accuracy, in %, of the EMA weights) is
drawn on a log scale, where the last epochs' small gains stay visible; a dashed line marks --goal (in %).
--metrics draws other accuracies of the same logs instead, one curve per file and metric, e.g.
--metrics test_accuracy,test_accuracy_ema0.9999,test_accuracy_raw (train.ema_compare's averages, raw weights).
--max-epoch N draws each log up to epoch N (to set a 300-epoch run next to 100-epoch ones).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_curve(path: Path, metric: str = "test_accuracy") -> tuple[list[int], list[float]]:
    """(epochs, 100 - metric in %) of one per-epoch log; SystemExit with one line if it has none."""
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; give the .jsonl file a run wrote (bench/gpu_recipe.py --out)")
    epochs, errors = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            epochs.append(int(row["epoch"]))
            errors.append(100.0 * (1.0 - float(row[metric])))
        except (ValueError, KeyError, TypeError):
            sys.exit(f"error: {path} line {n} is not an epoch record with 'epoch' and '{metric}'")
    if not epochs:
        sys.exit(f"error: {path} holds no epochs yet")
    return epochs, errors


def plot(curves: list[tuple[str, list[int], list[float]]], out: Path, goal: float | None = None,
         ylabel: str = "test error, EMA weights (%)") -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, epochs, errors in curves:
        ax.plot(epochs, errors, label=f"{label}: {errors[-1]:.2f} % after epoch {epochs[-1]}")
    if goal is not None:
        ax.axhline(goal, color="gray", linestyle="--", label=f"goal {goal} %")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", metavar="FILE[=LABEL]")
    ap.add_argument("--out", type=Path, required=True, help="the .png to write")
    ap.add_argument("--goal", type=float, default=None, help="a test error (%%) to mark")
    ap.add_argument("--metrics", default="test_accuracy", help="comma-separated accuracy keys of the logs to draw")
    ap.add_argument("--max-epoch", type=int, default=None, help="draw each log up to this epoch only")
    args = ap.parse_args(argv)
    metrics = [m for m in args.metrics.split(",") if m]
    curves = []
    for spec in args.files:
        name, _, label = spec.partition("=")
        label = label or Path(name).stem
        for metric in metrics:
            short = "EMA" if metric == "test_accuracy" else metric.removeprefix("test_accuracy_")
            shown = label if metrics == ["test_accuracy"] else f"{label}, {short}"
            epochs, errors = read_curve(Path(name), metric)
            keep = [i for i, e in enumerate(epochs) if args.max_epoch is None or e <= args.max_epoch]
            if not keep:
                sys.exit(f"error: {name} starts at epoch {epochs[0]}, after --max-epoch {args.max_epoch}; raise it")
            curves.append((shown, [epochs[i] for i in keep], [errors[i] for i in keep]))
    plot(curves, args.out, args.goal, "test error, EMA weights (%)" if metrics == ["test_accuracy"] else "test error (%)")
    for label, epochs, errors in curves:
        print(f"{label}: {errors[-1]:.2f} % test error after epoch {epochs[-1]} (lowest {min(errors):.2f} %)")


if __name__ == "__main__":
    main()
