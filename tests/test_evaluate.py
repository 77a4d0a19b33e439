"""Test-set evaluation: scikit-learn's metrics, and where a classifier goes wrong."""
import numpy as np
import pytest
import torch

from ssgan.evaluation.figures import confused_examples_figure
from ssgan.evaluation.metrics import score
from ssgan.evaluation.figures import image_grid

NAMES = tuple("abc")


def test_largest_confusions_are_the_largest_off_diagonal_cells():
    y_true = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    y_pred = np.array([0, 0, 0, 2, 2, 2, 0, 2, 1, 2])  # 1 -> 2 three times, 1 -> 0 once, 2 -> 1 once
    ev = score(y_true, y_pred, NAMES)
    assert ev.accuracy == pytest.approx(0.5)
    assert ev.confused_pairs(top=2) == [(1, 2, 3), (1, 0, 1)]
    assert len(ev.confused_pairs(top=10)) == 3  # only cells with errors
    assert score(y_true, y_true, NAMES).confused_pairs() == []


def test_confused_examples_show_the_test_images_of_each_pair():
    y_true = torch.tensor([0, 0, 1, 1, 1, 2])
    y_pred = np.array([0, 1, 2, 2, 1, 2])
    ev = score(y_true.numpy(), y_pred, NAMES)
    x = torch.rand(6, 1, 8, 8)
    fig = confused_examples_figure(ev, x, y_true, "sigmoid", per_pair=4)
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles == ["true b -> predicted c: 2 test examples", "true a -> predicted b: 1 test example"]
    rows = [np.asarray(ax.get_images()[0].get_array()) for ax in fig.axes]
    assert np.array_equal(rows[0], image_grid(x[[2, 3]], "sigmoid", nrow=4))  # the two b's read as c
    assert np.array_equal(rows[1], image_grid(x[[1]], "sigmoid", nrow=4))  # the a read as b


def test_no_confused_examples_for_tables_or_when_nothing_is_wrong():
    y = torch.tensor([0, 1, 2])
    wrong = score(y.numpy(), np.array([1, 1, 2]), NAMES)
    assert confused_examples_figure(wrong, torch.rand(3, 5), y, "tanh") is None
    right = score(y.numpy(), y.numpy(), NAMES)
    assert confused_examples_figure(right, torch.rand(3, 1, 8, 8), y, "tanh") is None
