"""ssgan against the supervised baseline on one split, in one line, from the two runs' summary.json.

`make demo` ends with it:

    python -m ssgan.experiments.gain runs/digits-20-ssgan/summary.json runs/digits-20-supervised/summary.json
    digits, 20 labels, split 0: ssgan 0.853 vs supervised 0.731 (+0.122)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ssgan.errors import SSGANError

SAME_SPLIT = ("dataset", "labels", "split_seed", "split_hash")  # equal split_hash: the same labeled examples


def side_by_side(ssgan_summary: dict[str, Any], supervised_summary: dict[str, Any]) -> str:
    """`digits, 20 labels, split 0: ssgan 0.853 vs supervised 0.731 (+0.122)`: test accuracies and the gain.
    The two runs must be of the two modes on the same split."""
    for summary, mode in ((ssgan_summary, "ssgan"), (supervised_summary, "supervised")):
        if summary.get("mode") != mode:
            raise SSGANError(f"expected a run in {mode} mode, got one in {summary.get('mode')!r} mode "
                             f"(run {summary.get('run_id')})")
    for key in SAME_SPLIT:
        if ssgan_summary.get(key) != supervised_summary.get(key):
            raise SSGANError(f"the runs are not of the same split: {key} is {ssgan_summary.get(key)!r} for ssgan "
                             f"and {supervised_summary.get(key)!r} for supervised")
    ours, theirs = ssgan_summary["test_accuracy"], supervised_summary["test_accuracy"]
    return (f"{ssgan_summary['dataset']}, {ssgan_summary['labels']} labels, split {ssgan_summary['split_seed']}: "
            f"ssgan {ours:.3f} vs supervised {theirs:.3f} ({ours - theirs:+.3f})")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """`python -m ssgan.experiments.gain SSGAN_SUMMARY SUPERVISED_SUMMARY`: print the line."""
    paths = list(sys.argv[1:] if argv is None else argv)
    if len(paths) != 2:
        sys.exit("usage: python -m ssgan.experiments.gain SSGAN/summary.json SUPERVISED/summary.json")
    try:
        summaries = [json.loads(Path(p).read_text()) for p in paths]
    except (OSError, ValueError) as e:  # a missing file, or one that is not JSON
        sys.exit(f"error: cannot read a run's summary: {e}")
    try:
        print(side_by_side(*summaries))
    except SSGANError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
