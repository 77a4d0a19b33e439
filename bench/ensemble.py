"""Score an ensemble: several runs' test-set class probabilities averaged, against each run alone.

    python bench/ensemble.py OUT/mnist-100-seed1-init100-probs.npy OUT/mnist-100-seed1-init200-probs.npy ...
        [--root ../shared/datasets] [--config configs/mnist-100.yaml] [--out OUT/ensemble.json]

Each file is an (N, K) array of one run's class probabilities on the dataset's fixed test set, as
`bench/gpu_recipe.py` writes them (the EMA classifier after the last epoch). All runs must be of the same
split seed: the members differ only in their training seed (init, batch order, noise). The ensemble
predicts the class of the members' mean probability. No member is picked by its test score.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ssgan.evaluation.metrics import score  # noqa: E402


def ensemble_report(member_probs: list[np.ndarray], names: list[str], y_test: np.ndarray) -> dict:
    """Test error (%) of each member and of the members' mean class probability, and the largest
    confusions (true class, predicted class, count) of each."""
    if not member_probs or any(p.shape != member_probs[0].shape for p in member_probs):
        raise ValueError("the members' probabilities must all have one shape (N, K)")
    if len(y_test) != len(member_probs[0]):
        raise ValueError(f"{len(member_probs[0])} rows of probabilities for {len(y_test)} test labels")

    def error(p: np.ndarray) -> float:
        return round(100.0 * float(np.mean(p.argmax(1) != y_test)), 3)

    def confusions(p: np.ndarray) -> list[list[int]]:
        return [list(c) for c in score(y_test, p.argmax(1), tuple(map(str, range(p.shape[1])))).confused_pairs(3)]

    members = [error(p) for p in member_probs]
    mean = np.mean(member_probs, axis=0)
    votes = np.stack([p.argmax(1) for p in member_probs])  # (M, N)
    agree = float(np.mean((votes == votes[0]).all(axis=0)))
    return {"members": names, "member_error_pct": members, "mean_member_error_pct": round(float(np.mean(members)), 3),
            "ensemble_error_pct": error(mean), "members_agree_fraction": round(agree, 4),
            "member_largest_confusions": [confusions(p) for p in member_probs],
            "ensemble_largest_confusions": confusions(mean)}


def load_runs(paths: list[str], root: str, config: str):
    """The runs' test-set probabilities and the split of `config` they were scored on (its fixed test set);
    exits with a one-line error for a missing file or probabilities of another test set."""
    from ssgan.config import load_config
    from ssgan.data.splits import load_split
    from ssgan.errors import SSGANError

    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        sys.exit(f"error: no such file: {missing[0]}; give -probs.npy files written by bench/gpu_recipe.py")
    try:
        split = load_split(load_config(config, [f"data.root={root}"]).data)  # the test set: the same for every split seed
    except SSGANError as e:
        sys.exit(f"error: {e}")
    probs = [np.load(p) for p in paths]
    for path, p in zip(paths, probs):
        if len(p) != len(split.y_test):
            sys.exit(f"error: {path} has {len(p)} rows, the test set of {config} has {len(split.y_test)}; "
                     "give the runs' config with --config")
    return probs, split


def add_run_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("probs", nargs="+", help="-probs.npy files written by bench/gpu_recipe.py")
    ap.add_argument("--root", default="../shared/datasets", help="folder holding MNIST/raw")
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs/mnist-100.yaml"),
                    help="the runs' config: its dataset's test labels score them")
    ap.add_argument("--out", default="", help="write the report as JSON here too")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(ap)
    args = ap.parse_args()
    probs, split = load_runs(args.probs, args.root, args.config)
    try:
        report = ensemble_report(probs, [Path(p).name for p in args.probs], split.y_test.numpy())
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
