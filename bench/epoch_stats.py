"""Test error of one or more runs' per-epoch logs (bench/gpu_recipe.py's .jsonl files) as a Markdown table.

    python bench/epoch_stats.py bench/results/cpu-mnist-100-dai-100-epochs/mnist-100-dai-seed0.jsonl=Dai \
        bench/results/cpu-mnist-100-100-epochs/mnist-100-seed0.jsonl=recipe --windows 21-40,41-66,67-100

One row per file (a legend label may follow "="): the error (100 - accuracy, in %) after the last epoch, the
lowest error and its epoch, and the mean error over each window of epochs (both ends included). One epoch's
error moves by about 0.05 points on MNIST's 10,000 test images, so a window's mean compares two runs better
than their last epochs do. --metric picks another accuracy of the same logs (test_accuracy_raw: D's raw
weights; test_accuracy_ema0.9999: a train.ema_compare average). A window a log does not reach shows "–".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from curves import read_curve


def parse_windows(spec: str) -> list[tuple[int, int]]:
    """'21-40,67-100' -> [(21, 40), (67, 100)]; SystemExit with one line if malformed."""
    windows = []
    for part in (p for p in spec.split(",") if p.strip()):
        first, _, last = part.strip().partition("-")
        try:
            a, b = int(first), int(last)
        except ValueError:
            sys.exit(f"error: --windows {spec!r}: {part.strip()!r} is not FIRST-LAST (e.g. 67-100)")
        if not 1 <= a <= b:
            sys.exit(f"error: --windows {spec!r}: {part.strip()!r} needs 1 <= FIRST <= LAST")
        windows.append((a, b))
    return windows


def stats(epochs: list[int], errors: list[float], windows: list[tuple[int, int]]) -> dict:
    """Last and lowest error, and the mean error of each window (None where the log has no epoch in it)."""
    low = min(range(len(errors)), key=errors.__getitem__)
    means = []
    for a, b in windows:
        inside = [err for ep, err in zip(epochs, errors) if a <= ep <= b]
        means.append(sum(inside) / len(inside) if inside else None)
    return {"last_epoch": epochs[-1], "last": errors[-1], "lowest": errors[low], "lowest_epoch": epochs[low],
            "means": means}


def table(rows: list[tuple[str, dict]], windows: list[tuple[int, int]]) -> str:
    head = ["run", "epochs", "last (%)", "lowest (%)"] + [f"mean {a}-{b} (%)" for a, b in windows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s in rows:
        cells = [label, str(s["last_epoch"]), f"{s['last']:.2f}", f"{s['lowest']:.2f} (epoch {s['lowest_epoch']})"]
        cells += ["–" if m is None else f"{m:.2f}" for m in s["means"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", metavar="FILE[=LABEL]")
    ap.add_argument("--windows", default="", help="comma-separated epoch windows FIRST-LAST to average, e.g. 67-100")
    ap.add_argument("--metric", default="test_accuracy", help="the accuracy key of the logs (default: EMA weights)")
    args = ap.parse_args(argv)
    windows = parse_windows(args.windows)
    rows = []
    for spec in args.files:
        name, _, label = spec.partition("=")
        epochs, errors = read_curve(Path(name), args.metric)
        rows.append((label or Path(name).stem, stats(epochs, errors, windows)))
    print(table(rows, windows))


if __name__ == "__main__":
    main()
