"""Where a split's runs fail together: its labeled images and the test images that every run misreads.

    python bench/hard_splits.py bench/results/explore-digits-20-robust --splits 0,1 --out docs/digits-20-hard-splits.png

Reads the runs `bench/gpu_recipe.py --config CONFIG --seed S --inits ...` wrote into a folder
(NAME-seedS-initI.json with the test confusion matrix, NAME-seedS-initI-probs.npy with the test-set class
probabilities). For each split seed S it takes the confusion (true class t read as p) with the largest
count that *every* run of S makes (the elementwise minimum of their confusion matrices, off the diagonal),
and draws one row of S's labeled images, sorted by class, then one row of the test images of class t that
the first run reads as p. Prints the same as text.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.config import from_dict  # noqa: E402
from ssgan.data.splits import load_split  # noqa: E402

from script import int_list, run_main  # noqa: E402  (bench/script.py)

RUN = re.compile(r"(?P<stem>.+)-seed(?P<split>\d+)-init(?P<init>\d+)\.json$")


def runs_of(folder: Path, split: int) -> list[tuple[int, dict, np.ndarray]]:
    """(training seed, summary, test probabilities) of every run of `split` in `folder`, by training seed."""
    found = []
    for path in folder.glob(f"*-seed{split}-init*.json"):
        m = RUN.match(path.name)
        if m and int(m["split"]) == split:
            probs = np.load(path.with_name(path.stem + "-probs.npy"))
            found.append((int(m["init"]), json.loads(path.read_text()), probs))
    return sorted(found, key=lambda r: r[0])


def shared_confusion(summaries: list[dict]) -> tuple[int, int, int]:
    """(true, predicted, count): the off-diagonal cell whose smallest count over the runs is largest."""
    least = np.min([np.asarray(s["confusion_matrix"]) for s in summaries], axis=0)
    np.fill_diagonal(least, -1)
    t, p = np.unravel_index(np.argmax(least), least.shape)
    return int(t), int(p), int(least[t, p])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--splits", default="0,1", help="comma-separated split seeds")
    ap.add_argument("--out", type=Path, default=Path("docs/digits-20-hard-splits.png"))
    args = ap.parse_args()
    splits = int_list(args.splits, "--splits", example="0,1")
    rows = []
    for split in splits:
        runs = runs_of(args.folder, split)
        if not runs:
            sys.exit(f"error: no runs of split seed {split} in {args.folder}; run bench/gpu_recipe.py --seed {split} first")
        init, first, probs = runs[0]
        data = load_split(from_dict(first["config"]).data)
        t, p, least = shared_confusion([r[1] for r in runs])
        y_test = data.y_test.numpy()
        wrong = np.where((y_test == t) & (probs.argmax(1) == p))[0]
        idx = data.labeled_idx.numpy()
        labeled = idx[np.argsort(data.y_train[idx].numpy(), kind="stable")]
        accs = ", ".join(f"{100 * r[1]['test_accuracy']:.1f}" for r in runs)
        print(f"split {split}: {len(runs)} runs ({accs} %); every run reads at least {least} of the "
              f"{(y_test == t).sum()} test {t}s as {p}; training seed {init} reads {len(wrong)}")
        rows.append((f"split {split}: its {len(labeled)} labeled images, by class", data.x_train[labeled]))
        rows.append((f"test {t}s that training seed {init} reads as {p}: {len(wrong)} of {(y_test == t).sum()} "
                     f"(every run of split {split}: at least {least})", data.x_test[wrong]))
    width = max(len(images) for _, images in rows)
    side = int(round(rows[0][1][0].numel() ** 0.5))
    fig, axes = plt.subplots(len(rows), width, figsize=(0.55 * width, 0.85 * len(rows)), squeeze=False)
    for (title, images), line in zip(rows, axes):
        for j, ax in enumerate(line):
            ax.axis("off")
            if j < len(images):
                ax.imshow(images[j].reshape(side, side).numpy(), cmap="gray_r")
        line[0].set_title(title, loc="left", fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02, hspace=0.6, wspace=0.1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_main(main)
