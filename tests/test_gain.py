"""The side-by-side line that `make demo` ends with: ssgan vs supervised on the same split, and the gain."""
import json
import subprocess
import sys

import pytest

from ssgan.errors import SSGANError
from ssgan.experiments.gain import side_by_side


def summary(mode, accuracy, **changes):
    """The keys of a run's summary.json that the line reads."""
    return {"run_id": f"{mode}-run", "mode": mode, "dataset": "digits", "labels": 20, "split_seed": 0,
            "split_hash": "a1b2c3", "test_accuracy": accuracy, **changes}


def test_the_line_gives_both_accuracies_and_the_gain():
    assert side_by_side(summary("ssgan", 0.8533), summary("supervised", 0.7311)) == \
        "digits, 20 labels, split 0: ssgan 0.853 vs supervised 0.731 (+0.122)"
    assert side_by_side(summary("ssgan", 0.7), summary("supervised", 0.75)).endswith("(-0.050)")


@pytest.mark.parametrize("ssgan,supervised,message", [
    (summary("ssgan", 0.8, split_seed=1), summary("supervised", 0.7), "split_seed is 1 for ssgan and 0 for supervised"),
    (summary("ssgan", 0.8), summary("supervised", 0.7, split_hash="ffff"), "split_hash is 'a1b2c3' for ssgan"),
    (summary("ssgan", 0.8), summary("supervised", 0.7, labels=50), "labels is 20 for ssgan and 50 for supervised"),
    (summary("supervised", 0.8), summary("supervised", 0.7), "expected a run in ssgan mode, got one in 'supervised'"),
])
def test_runs_of_other_splits_or_modes_are_refused(ssgan, supervised, message):
    with pytest.raises(SSGANError, match=message):
        side_by_side(ssgan, supervised)


def test_python_m_prints_the_line_from_two_summary_files(tmp_path):
    paths = []
    for mode, accuracy in (("ssgan", 0.9), ("supervised", 0.8)):
        paths.append(tmp_path / f"{mode}.json")
        paths[-1].write_text(json.dumps(summary(mode, accuracy)))
    run = subprocess.run([sys.executable, "-m", "ssgan.experiments.gain", *map(str, paths)], capture_output=True,
                         text=True)
    assert run.returncode == 0 and run.stdout == "digits, 20 labels, split 0: ssgan 0.900 vs supervised 0.800 (+0.100)\n"
    missing = subprocess.run([sys.executable, "-m", "ssgan.experiments.gain", str(paths[0]), str(tmp_path / "no.json")],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("error: cannot read a run's summary: ")
