"""bench/ensemble.py: several runs of one split, their class probabilities averaged."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ensemble import ensemble_report  # noqa: E402

Y = np.array([0, 1, 2, 2])


def probs(rows):
    return np.array(rows, dtype=np.float32)


def test_the_ensemble_predicts_the_class_of_the_mean_probability():
    # member a is wrong on row 2 (reads 2 as 1) but unsure; member b is wrong on row 0 and sure of it
    a = probs([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.0, 0.1, 0.9]])
    b = probs([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9], [0.1, 0.1, 0.8]])
    report = ensemble_report([a, b], ["a", "b"], Y)
    assert report["member_error_pct"] == [25.0, 25.0]
    assert report["mean_member_error_pct"] == 25.0
    # mean: row 0 -> [0.55, 0.375, 0.075] right; row 2 -> [0.05, 0.3, 0.65] right
    assert report["ensemble_error_pct"] == 0.0
    assert report["members_agree_fraction"] == 0.5
    assert report["member_largest_confusions"] == [[[2, 1, 1]], [[0, 1, 1]]]
    assert report["ensemble_largest_confusions"] == []


def test_a_confident_wrong_member_can_outvote_an_unsure_right_one():
    right_unsure = probs([[0.4, 0.35, 0.25], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    wrong_sure = probs([[0.0, 1.0, 0.0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    report = ensemble_report([right_unsure, wrong_sure], ["r", "w"], Y)
    assert report["member_error_pct"] == [0.0, 25.0]
    assert report["ensemble_error_pct"] == 25.0
    assert report["ensemble_largest_confusions"] == [[0, 1, 1]]


def test_members_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        ensemble_report([probs([[1, 0, 0]] * 4), probs([[1, 0]] * 4)], ["a", "b"], Y)
    with pytest.raises(ValueError, match="4 test labels"):
        ensemble_report([probs([[1, 0, 0]] * 3)], ["a"], Y)
