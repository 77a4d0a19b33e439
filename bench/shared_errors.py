"""Test images that every run gets wrong: the part of the test error no ensemble of these runs can remove.

    python bench/shared_errors.py OUT/mnist-100-dai-seed0-probs.npy OUT/mnist-100-dai-seed1-probs.npy ...
        [--root ../shared/datasets] [--config configs/mnist-100.yaml] [--out X.json] [--figure X.png]

Each file is one run's class probabilities on the dataset's fixed test set (`bench/gpu_recipe.py` writes
them); the runs may be of different split seeds. The report gives each run's number of test errors, how
many test images all runs get wrong, at least half of them get wrong, or any gets wrong, and what the
images all runs get wrong are read as (true class, the class of the runs' mean probability, count).
An ensemble predicts from the members' mean probability, so an image every member gets wrong stays
wrong in it whatever the weights (unless members disagree on the wrong class and their mean lands on
the right one, which this counts as wrong): the `wrong_in_all` count is a floor under what averaging
these runs can reach. `--figure` draws those images (image datasets). (`bench/hard_splits.py` shows one
split's labeled images next to the largest confusion all of that split's runs make.)
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensemble import add_run_arguments, load_runs  # noqa: E402


def shared_errors(run_probs: list[np.ndarray], names: list[str], y_test: np.ndarray) -> dict:
    """Per run, its test errors; over the runs, the images all / at least half / any of them get wrong."""
    if not run_probs or any(p.shape != run_probs[0].shape for p in run_probs):
        raise ValueError("the runs' probabilities must all have one shape (N, K)")
    wrong = np.stack([p.argmax(1) != y_test for p in run_probs])  # (runs, N)
    in_all = np.flatnonzero(wrong.all(0))
    read_as = np.mean(run_probs, axis=0).argmax(1)
    return {"runs": names, "run_errors": wrong.sum(1).tolist(), "test_images": len(y_test),
            "wrong_in_all": len(in_all), "wrong_in_half_or_more": int((wrong.mean(0) >= 0.5).sum()),
            "wrong_in_any": int(wrong.any(0).sum()),
            "wrong_in_all_read_as": [[int(t), int(p), n] for (t, p), n in
                                     Counter(zip(y_test[in_all].tolist(), read_as[in_all].tolist())).most_common()],
            "wrong_in_all_indices": in_all.tolist()}


def as_images(x: np.ndarray) -> np.ndarray | None:
    """Test inputs as pictures: (N, H, W) gray or (N, H, W, 3) in [0, 1]; None for rows of a table."""
    if x.ndim == 2 and round(np.sqrt(x.shape[1])) ** 2 == x.shape[1]:  # flattened square images (MNIST rows)
        side = round(np.sqrt(x.shape[1]))
        x = x.reshape(len(x), 1, side, side)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        return None
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-12)
    return x[:, 0] if x.shape[1] == 1 else x.transpose(0, 2, 3, 1)


def draw(report: dict, x_test: np.ndarray, y_test: np.ndarray, run_probs: list[np.ndarray], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = report["wrong_in_all_indices"]
    read_as = np.mean(run_probs, axis=0).argmax(1)
    cols = 12
    rows = max(1, -(-len(idx) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.3 + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, idx):
        ax.imshow(x_test[i], cmap="gray_r")
        ax.set_title(f"{y_test[i]}→{read_as[i]}", fontsize=9)
    fig.suptitle(f"{len(idx)} test images all {len(run_probs)} runs get wrong (true → read as)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(ap)
    ap.add_argument("--figure", default="", help="draw the images all runs get wrong to this PNG")
    args = ap.parse_args()
    probs, split = load_runs(args.probs, args.root, args.config)
    y_test = split.y_test.numpy()
    try:
        report = shared_errors(probs, list(args.probs), y_test)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(json.dumps({k: v for k, v in report.items() if k != "wrong_in_all_indices"}))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.figure:
        images = as_images(split.x_test.numpy())
        if images is None:
            sys.exit("error: --figure draws images; this dataset's test inputs are rows of a table")
        draw(report, images, y_test, probs, args.figure)


if __name__ == "__main__":
    main()
