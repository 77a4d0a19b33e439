"""SSGANClassifier: a scikit-learn classifier whose y == -1 rows are unlabeled data for the GAN."""
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from ssgan.estimator import SSGANClassifier
from ssgan.data.preprocess import MinMax, Standardize

# Small enough for scikit-learn's checks, which fit dozens of times on tiny data.
SMALL = dict(hidden_layers=(32,), generator_layers=(32,), noise_dim=8, epochs=10)

EXPECTED_FAILED_CHECKS = {
    "check_classifiers_classes": "its last case is the binary target {-1, 1}, but y == -1 marks an unlabeled "
                                 "row (scikit-learn's semi-supervised convention), so only one class is labeled; "
                                 "its string-label cases pass (test_string_labels_and_labels_with_gaps)",
}


@parametrize_with_checks([SSGANClassifier(**SMALL)], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
                         xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    """load_digits as (1797, 64) features, with all but 30% of the labels hidden (-1)."""
    X, y = load_digits(return_X_y=True)
    y_partial = y.copy()
    y_partial[np.random.default_rng(0).random(len(y)) > 0.3] = -1
    return X, y, y_partial


def test_unlabeled_rows_are_not_a_class(digits):
    X, y, y_partial = digits
    clf = SSGANClassifier(**SMALL).fit(X, y_partial)
    assert list(clf.classes_) == list(range(10))
    assert set(clf.predict(X)) <= set(range(10))
    assert clf.n_features_in_ == 64 and clf.input_shape_ == (64,)
    assert isinstance(clf.preprocessor_, Standardize)
    assert len(clf.history_) == SMALL["epochs"] and clf.stop_reason_ == "completed"
    assert not clf.model_.training and next(clf.model_.parameters()).device.type == "cpu"


def _scramble_unlabeled_rows(X: np.ndarray, y_partial: np.ndarray) -> np.ndarray:
    """Shuffle each feature separately among the unlabeled rows: the rows become noise, while every
    column keeps its values (so the standardization fitted on X stays the same)."""
    X = X.copy()
    rows = np.flatnonzero(y_partial == -1)
    rng = np.random.default_rng(1)
    for j in range(X.shape[1]):
        X[rows, j] = X[rng.permutation(rows), j]
    return X


def test_unlabeled_rows_train_the_ssgan_model_and_not_the_supervised_one(digits):
    X, _, y_partial = digits
    X_scrambled = _scramble_unlabeled_rows(X, y_partial)

    def change(mode: str) -> float:
        """How far scrambling the unlabeled rows moves the fitted model's probabilities."""
        p = SSGANClassifier(mode=mode, **SMALL).fit(X, y_partial).predict_proba(X)
        return np.abs(p - SSGANClassifier(mode=mode, **SMALL).fit(X_scrambled, y_partial).predict_proba(X)).max()

    assert change("ssgan") > 1e-2
    assert change("supervised") < 1e-6


def test_string_labels_and_labels_with_gaps():
    X, y = load_digits(n_class=3, return_X_y=True)
    names = np.array(["cat", "dog", "emu"])[y]  # dtype str: every row is labeled
    clf = SSGANClassifier(**SMALL).fit(X, names)
    assert list(clf.classes_) == ["cat", "dog", "emu"] and clf.score(X, names) > 0.9
    # dtype object: strings with -1 for unlabeled rows, as for SelfTrainingClassifier
    mixed = names.astype(object)
    mixed[::2] = -1
    assert list(SSGANClassifier(**SMALL).fit(X, mixed).classes_) == ["cat", "dog", "emu"]
    # integers with gaps: classes_ are the labels themselves, predictions are drawn from them
    gaps = np.array([2, 5, 9])[y]
    gaps[::2] = -1
    clf = SSGANClassifier(**SMALL).fit(X, gaps)
    assert list(clf.classes_) == [2, 5, 9] and set(clf.predict(X)) <= {2, 5, 9}


def test_predict_proba_rows_sum_to_one_and_argmax_is_predict(digits):
    X, _, y_partial = digits
    clf = SSGANClassifier(**SMALL).fit(X, y_partial)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 10) and proba.dtype == np.float64 and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))


def test_same_random_state_same_model_and_the_callers_torch_rng_is_left_alone(digits):
    X, _, y_partial = digits
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    p1 = SSGANClassifier(**SMALL, random_state=7).fit(X, y_partial).predict_proba(X)
    assert torch.equal(torch.rand(3), expected)
    p2 = SSGANClassifier(**SMALL, random_state=7).fit(X, y_partial).predict_proba(X)
    p3 = SSGANClassifier(**SMALL, random_state=8).fit(X, y_partial).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, p3)


@pytest.mark.parametrize("arch, config", [("mlp", None), ("conv", {"model.conv_width": 8})])
def test_image_arrays(arch, config):
    digits = load_digits()
    images, y = digits.images[:600, None], digits.target[:600]  # (600, 1, 8, 8), values 0..16
    y_partial = np.where(np.arange(len(y)) % 3 == 0, y, -1)
    clf = SSGANClassifier(arch=arch, config=config, **SMALL).fit(images, y_partial)
    assert clf.input_shape_ == (1, 8, 8) and isinstance(clf.preprocessor_, MinMax)
    assert clf.predict_proba(images).shape == (600, 10)
    assert clf.score(images, y) > 0.5  # chance is 0.1
    for shape in [(600, 64), (600, 1, 8, 7)]:
        with pytest.raises(ValueError, match=r"X has samples of shape \(.*\), but SSGANClassifier was fitted "
                                             r"on samples of shape \(1, 8, 8\)"):
            clf.predict(np.zeros(shape))


def test_score_ignores_unlabeled_rows(digits):
    X, y, y_partial = digits
    clf = SSGANClassifier(**SMALL).fit(X, y_partial)
    labeled = y_partial != -1
    assert clf.score(X, y_partial) == np.mean(clf.predict(X[labeled]) == y[labeled])
    with pytest.raises(ValueError, match="score needs labeled rows, but every label in y is -1"):
        clf.score(X, np.full(len(X), -1))


def test_pipeline_and_cross_val_score_on_partially_labeled_data(digits):
    X, _, y_partial = digits
    pipe = make_pipeline(StandardScaler(), SSGANClassifier(**SMALL))
    # each held-out fold is scored on its labeled rows (SSGANClassifier.score)
    scores = cross_val_score(pipe, X, y_partial, cv=3, error_score="raise")
    assert scores.shape == (3,) and (scores > 0.5).all()  # chance is 0.1
    assert pipe.fit(X, y_partial).predict(X).shape == (len(X),)


def test_clone_is_an_unfitted_copy_with_equal_params(digits):
    X, _, y_partial = digits
    clf = SSGANClassifier(**SMALL, config={"tricks.dropout": 0.1}).fit(X, y_partial)
    assert clf.config == {"tricks.dropout": 0.1}  # fit reads it, never changes it
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert copy.config is not clf.config
    assert not hasattr(copy, "classes_") and not hasattr(copy, "model_")


def test_training_stopped_by_the_watchdog_is_recorded_and_warned(digits):
    X, _, y_partial = digits
    # D's loss below 1e9 for 1 step counts as "D has won": the watchdog stops at once
    clf = SSGANClassifier(**SMALL, config={"tricks.watchdog.d_loss_below": 1e9, "tricks.watchdog.patience": 1})
    with pytest.warns(UserWarning, match=r"training stopped after 0 epoch\(s\) \(d_loss_collapse\)"):
        clf.fit(X, y_partial)
    assert clf.stop_reason_ == "d_loss_collapse" and clf.history_ == []


X_BAD = np.zeros((6, 2))
Y_BAD = np.array([0, 1, 0, 1, -1, -1])


@pytest.mark.parametrize("X, y, match", [
    (np.where(np.eye(6, 2) > 0, np.nan, 0.0), Y_BAD, "Input X contains NaN"),
    (np.where(np.eye(6, 2) > 0, np.inf, 0.0), Y_BAD, "Input X contains infinity"),
    (X_BAD, np.full(6, -1), r"y has no labeled rows \(every label is -1\)"),
    (X_BAD, np.array([3, 3, -1, -1, -1, 3]), r"y has labeled rows of only one class \(3\)"),
    (X_BAD, np.array([0.5, 1.5, 0.5, 1.5, -1, -1]), "Unknown label type: continuous"),
    (X_BAD, Y_BAD[:5], "inconsistent numbers of samples"),
    (np.zeros(6), Y_BAD, "Expected 2D array, got 1D array"),
])
def test_bad_data_raise_value_error_naming_the_problem(X, y, match):
    with pytest.raises(ValueError, match=match):
        SSGANClassifier(**SMALL).fit(X, y)


@pytest.mark.parametrize("params, match", [
    (dict(epochs=0), "SSGANClassifier: train.epochs must be >= 1; got 0"),
    (dict(mode="semi"), "SSGANClassifier: mode must be one of ssgan, supervised, vat, mean_teacher, pi_model; got 'semi'"),
    (dict(arch="conv"), r"SSGANClassifier: model.arch=conv needs images of shape \(C, H, W\)"),
    (dict(config={"train.epoch": 3}), "SSGANClassifier: unknown config key 'train.epoch'"),
    (dict(config={"train.epochs": 3}), r"config\['train.epochs'\] is set by the parameter epochs; set it there"),
    (dict(config={"data.labels": 3}), r"config\['data.labels'\] is set by fit"),
])
def test_bad_parameters_raise_a_one_line_value_error_at_fit(params, match):
    clf = SSGANClassifier(**{**SMALL, **params})  # __init__ only stores them
    with pytest.raises(ValueError, match=match) as e:
        clf.fit(np.random.default_rng(0).random((20, 3)), np.arange(20) % 2)
    assert "\n" not in str(e.value)


def test_predict_checks_its_input(digits):
    X, _, y_partial = digits
    clf = SSGANClassifier(**SMALL)
    with pytest.raises(ValueError, match="This SSGANClassifier instance is not fitted yet"):  # NotFittedError
        clf.predict(X)
    clf.fit(X, y_partial)
    with pytest.raises(ValueError, match="X has 3 features, but SSGANClassifier is expecting 64 features as input"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.predict(np.where(X == X.max(), np.nan, X))


def test_the_estimator_is_exported_at_the_top_level():
    import ssgan

    assert ssgan.SSGANClassifier is SSGANClassifier


@pytest.mark.parametrize("verbose", [0, 1])
def test_verbose_prints_one_line_per_epoch_to_stderr(digits, capsys, verbose):
    import logging

    X, _, y_partial = digits
    logger = logging.getLogger("ssgan")
    before = (logger.level, logger.propagate, list(logger.handlers))
    clf = SSGANClassifier(**{**SMALL, "epochs": 3}, verbose=verbose).fit(X[:300], y_partial[:300])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    if verbose:
        assert [line.split("  ")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
        assert all("loss_d" in line and "test_accuracy" in line for line in lines)  # test = the labeled rows of X
    else:
        assert err == ""
    assert out == "" and len(clf.history_) == 3
    assert (logger.level, logger.propagate, list(logger.handlers)) == before  # fit leaves logging as it was
