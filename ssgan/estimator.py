"""A scikit-learn classifier around the ssgan training loop.

`SSGANClassifier().fit(X, y)` trains the K+1-class discriminator of Salimans et al. 2016 ("Improved
Techniques for Training GANs", sec. 5) on the labeled rows of `y` and, in `mode="ssgan"` or a consistency
mode, on every row of `X` as unlabeled data. As in scikit-learn's `LabelSpreading` and `SelfTrainingClassifier`, the label
-1 marks an unlabeled row. `X` is a table (N, F) or an array of images (N, C, H, W).

The estimator only translates: its parameters become a `Config` (whose table checks every value), the
data become a `Split`, and `ssgan.training.fit` does the training.
"""
from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_consistent_length, check_is_fitted, column_or_1d, validate_data

from ssgan.nets.inference import predict_proba
from ssgan.training.fit import fit
from ssgan.training.step import resolve_device
from ssgan.config import Config, from_dict, set_dotted
from ssgan.data.splits import UNLABELED, Split
from ssgan.errors import ConfigError
from ssgan.data.preprocess import fit_for

# Estimator parameter -> the config key it sets; config.py checks each value's type and range.
PARAM_KEYS = {
    "mode": "mode",
    "arch": "model.arch",
    "hidden_layers": "model.d_hidden",
    "generator_layers": "model.g_hidden",
    "noise_dim": "model.noise_dim",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "ema_decay": "train.ema_decay",
    "device": "train.device",
}
# Keys set by `fit` itself: the Split it builds already marks which rows are labeled.
FIT_KEYS = {"data.name": "npz", "data.labels": None}
SEED_KEY = "train.seed"


class SSGANClassifier(ClassifierMixin, BaseEstimator):
    """Semi-supervised GAN classifier (Salimans et al. 2016); rows with `y == -1` are unlabeled.

    Parameters (each sets one config key; see ssgan/config.py for the recipe behind it)
    ----------
    mode : "ssgan" trains D on labeled, unlabeled and generated rows; "supervised" on the labeled rows
        alone, with the same network, optimizer and schedule (the baseline); "vat", "mean_teacher" and
        "pi_model" the same network without a generator, with a consistency term on the unlabeled rows
        (their settings: the `ssl.*` config keys, docs/training.md).
    arch : "mlp" (tables or images) or "conv" (images (N, C, H, W), H and W divisible by 4).
    hidden_layers : widths of the discriminator's hidden layers (`model.d_hidden`, mlp).
    generator_layers : widths of the generator's hidden layers (`model.g_hidden`, mlp).
    noise_dim : size of the generator's input z ~ U(0, 1)^noise_dim.
    epochs : passes over all rows of X; one pass is len(X) // batch_size steps.
    batch_size : rows per batch (of labeled, of unlabeled and of generated rows); at most len(X).
    lr : Adam's learning rate; None = the recipe's default for `arch` (3e-3 mlp, 1e-4 conv).
    ema_decay : the fitted model is an exponential moving average of D's weights; 0 = the raw weights.
    random_state : int seed, or None / a RandomState to draw one; an int gives the same model on
        every fit (on the same machine and torch build). The caller's global torch RNG is left as it was.
    device : "cpu", "cuda", "cuda:N" or "auto" for training; the fitted model lives on the CPU.
    config : optional dict of further dotted config keys, e.g. {"tricks.dropout": 0.3,
        "train.steps_per_epoch": 20}; a key set by a parameter above (or by fit) is refused.
    verbose : 0 = silent; >= 1 = one line per epoch on stderr while fitting (epoch, losses, accuracy on the
        labeled rows of X), from the training loop's log (the logger "ssgan", at INFO).

    Attributes
    ----------
    classes_ : the labels of the labeled rows, sorted (never -1).
    n_features_in_ : X.shape[1], as scikit-learn records it (for images: the channels).
    input_shape_ : the shape of one sample, X.shape[1:]; predict asks for the same.
    preprocessor_ : `Standardize` (tables) or `MinMax` (images), fitted on the X passed to fit.
    model_ : the trained discriminator (EMA weights), on the CPU, in eval mode.
    history_ : one dict of metrics per epoch; "test_accuracy" there is the accuracy on the labeled rows of X.
    stop_reason_ : why training stopped: "completed", or the watchdog's reason (a warning says more).

    Labels: -1 marks an unlabeled row when y is numeric or of dtype object (so string labels can be
    mixed with -1 in an object array, as for SelfTrainingClassifier); a y of dtype str has every row labeled.
    """

    def __init__(
        self,
        mode: str = "ssgan",
        arch: str = "mlp",
        hidden_layers: tuple[int, ...] = (500, 250, 250),
        generator_layers: tuple[int, ...] = (250, 250),
        noise_dim: int = 50,
        epochs: int = 30,
        batch_size: int = 50,
        lr: Optional[float] = None,
        ema_decay: float = 0.99,
        random_state: Any = 0,
        device: str = "cpu",
        config: Optional[dict[str, Any]] = None,
        verbose: int = 0,
    ):
        self.mode = mode
        self.arch = arch
        self.hidden_layers = hidden_layers
        self.generator_layers = generator_layers
        self.noise_dim = noise_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.ema_decay = ema_decay
        self.random_state = random_state
        self.device = device
        self.config = config
        self.verbose = verbose

    def fit(self, X, y) -> "SSGANClassifier":
        """Train on (X, y); rows with y == -1 are used as unlabeled data (every mode but "supervised")."""
        X, y = validate_data(self, X, y, allow_nd=True, dtype=(np.float64, np.float32))
        labeled = labeled_mask(y)
        if not labeled.any():
            raise ValueError("y has no labeled rows (every label is -1); label rows of at least two classes")
        check_classification_targets(y[labeled])
        classes, y_lb = np.unique(y[labeled], return_inverse=True)  # (K,), (L,) in 0..K-1
        if len(classes) < 2:
            raise ValueError(f"y has labeled rows of only one class ({classes.tolist()[0]!r}); "
                             "label at least two classes")
        try:
            cfg = self._config(n_samples=len(X))
            preprocessor = fit_for(X, cfg.data.scale)  # tables: standardized; images: their range
            split = make_split(preprocessor(X), labeled, y_lb, classes)
            with _own_rng(cfg), _EpochLines(self.verbose):
                result = fit(cfg, split, progress=False)
        except ConfigError as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None
        if result.stop_reason != "completed":
            warnings.warn(f"training stopped after {len(result.history)} epoch(s) ({result.stop_reason}): "
                          f"{result.stop_message}", UserWarning, stacklevel=2)
        self.classes_, self.input_shape_, self.preprocessor_ = classes, X.shape[1:], preprocessor
        self.model_ = result.classifier.cpu().eval()
        self.history_, self.stop_reason_ = result.history, result.stop_reason
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities (N, K) over `classes_`; deterministic, and independent of how rows are batched."""
        check_is_fitted(self)
        if len(self.input_shape_) > 1 and np.shape(X)[1:] != self.input_shape_:  # images: the whole shape
            raise ValueError(f"X has samples of shape {np.shape(X)[1:]}, but {type(self).__name__} was fitted "
                             f"on samples of shape {self.input_shape_}")
        X = validate_data(self, X, reset=False, allow_nd=True, dtype=(np.float64, np.float32))
        proba = predict_proba(self.model_, self.preprocessor_(X), len(self.classes_)).double()  # (N, K)
        return (proba / proba.sum(dim=1, keepdim=True)).numpy()

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row, from `classes_`."""
        proba = self.predict_proba(X)  # (N, K); checks that the estimator is fitted
        return self.classes_[proba.argmax(axis=1)]

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on the labeled rows of (X, y); rows with y == -1 are ignored.

        So `cross_val_score` and `GridSearchCV` can score held-out folds of partially labeled data with
        the estimator's own score (scoring=None); a fold without a labeled row is a ValueError.
        """
        check_consistent_length(X, y, sample_weight)
        y = column_or_1d(y, warn=True)
        labeled = labeled_mask(y)
        if not labeled.any():
            raise ValueError("score needs labeled rows, but every label in y is -1 (unlabeled)")
        weight = None if sample_weight is None else np.asarray(sample_weight)[labeled]
        return float(accuracy_score(y[labeled], self.predict(X)[labeled], sample_weight=weight))

    def _config(self, n_samples: int) -> Config:
        """The training config: the parameters, fit's own keys, then `config`'s extra keys."""
        extra = dict(self.config or {})
        owned = {**{key: f"the parameter {name}" for name, key in PARAM_KEYS.items()},
                 **{key: "fit" for key in FIT_KEYS}, SEED_KEY: "the parameter random_state"}
        for key in extra:
            if key in owned:
                raise ValueError(f"config[{key!r}] is set by {owned[key]}; set it there, not in config")
        values = {key: getattr(self, name) for name, key in PARAM_KEYS.items()}
        if isinstance(self.batch_size, int) and self.batch_size >= 1:  # else the config check names it
            values["train.batch_size"] = min(self.batch_size, n_samples)
        if self.lr is None:  # the recipe's default for the architecture
            del values["train.lr"]
        raw: dict[str, Any] = {}
        for key, value in {**values, **FIT_KEYS, SEED_KEY: draw_seed(self.random_state), **extra}.items():
            set_dotted(raw, key, value)
        return from_dict(raw)


def labeled_mask(y: np.ndarray) -> np.ndarray:
    """True where y carries a label: y != -1, and every row of a string array (which cannot hold -1)."""
    if y.dtype.kind in "US":
        return np.ones(len(y), dtype=bool)
    return np.asarray(y != UNLABELED, dtype=bool)


def make_split(x: torch.Tensor, labeled: np.ndarray, y_lb: np.ndarray, classes: np.ndarray) -> Split:
    """The training Split: every row unlabeled except `labeled`, whose class indices are `y_lb`.
    Its test set is the labeled rows (training only reports accuracy on them)."""
    labeled_idx = torch.as_tensor(np.flatnonzero(labeled), dtype=torch.int64)  # (L,)
    y_train = torch.full((len(x),), UNLABELED, dtype=torch.int64)  # (N,)
    y_train[labeled_idx] = torch.as_tensor(y_lb, dtype=torch.int64)
    return Split(x_train=x, y_train=y_train, labeled_idx=labeled_idx, x_test=x[labeled_idx],
                 y_test=y_train[labeled_idx], class_names=tuple(str(c) for c in classes))


def draw_seed(random_state: Any) -> int:
    """An int random_state is the seed itself; None or a RandomState draws one."""
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


class _EpochLines:
    """With verbose >= 1, the "ssgan" logger's INFO lines (one per epoch) go to stderr for the duration of fit,
    once each: meanwhile the logger does not also pass them on to the caller's handlers."""

    def __init__(self, verbose: int):
        import logging
        import sys

        self.logger = logging.getLogger("ssgan")
        self.handler = logging.StreamHandler(sys.stderr) if verbose else None
        self.saved = (self.logger.level, self.logger.propagate)

    def __enter__(self) -> None:
        import logging

        if self.handler is not None:
            self.handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(self.handler)
            self.logger.setLevel(logging.INFO)
            self.logger.propagate = False

    def __exit__(self, *exc) -> None:
        if self.handler is not None:
            self.logger.removeHandler(self.handler)
            self.logger.setLevel(self.saved[0])
            self.logger.propagate = self.saved[1]


def _own_rng(cfg: Config):
    """Training seeds torch's global RNG (train.seed); restore the caller's RNG state afterwards."""
    on_cpu = resolve_device(cfg.train.device).type == "cpu"
    return torch.random.fork_rng(devices=[] if on_cpu else None)  # None: every CUDA device
