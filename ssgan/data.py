"""Datasets and the labeled/unlabeled split.

Every source ends as a `Split`: float training inputs scaled to the generator's range, the labeled
subset's indices, and a fixed test set. As in Salimans et al. 2016, the unlabeled pool is the whole
training set (labeled examples included); the labeled subset is drawn class-balanced from
`data.split_seed`, so every method and mode sees the same labels for the same seed.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssgan.config import DataConfig
from ssgan.errors import DataError

UNLABELED = -1


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor  # (N, *input_shape) float32, scaled to the generator's output range
    y_train: torch.Tensor  # (N,) int64 class index, UNLABELED where the label is unknown
    labeled_idx: torch.Tensor  # (L,) indices into x_train of the labeled subset
    x_test: torch.Tensor  # (M, *input_shape)
    y_test: torch.Tensor  # (M,)
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def split_hash(self) -> str:
        """Fingerprint of the labeled indices: two runs with equal hashes saw the same labels."""
        return hashlib.sha256(self.labeled_idx.numpy().astype(np.int64).tobytes()).hexdigest()[:16]


def load_split(cfg: DataConfig) -> Split:
    loaders = {"mnist": _load_mnist, "digits": _load_digits, "npz": _load_npz, "csv": _load_csv}
    if cfg.name not in loaders:  # config typing already rejects this; kept for direct callers
        raise DataError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(loaders)}")
    x_train, y_train, x_test, y_test, class_names, lo, hi = loaders[cfg.name](cfg)
    labeled_idx = draw_labeled(y_train, cfg.labels, cfg.split_seed, len(class_names))
    scale = _scaler(lo, hi, cfg.scale)
    return Split(
        x_train=scale(x_train),
        y_train=torch.as_tensor(y_train, dtype=torch.int64),
        labeled_idx=torch.as_tensor(labeled_idx, dtype=torch.int64),
        x_test=scale(x_test),
        y_test=torch.as_tensor(y_test, dtype=torch.int64),
        class_names=class_names,
    )


def draw_labeled(y: np.ndarray, n: int | None, seed: int, num_classes: int) -> np.ndarray:
    """Indices of a class-balanced labeled subset of size `n` (None = every labeled example).

    Each class gets n // K examples; the remaining n % K go to classes picked at random. The
    draw depends only on `y`, `n` and `seed`.
    """
    known = np.flatnonzero(y != UNLABELED)
    if n is None:
        return known
    if n > len(known):
        raise DataError(f"data.labels={n} but only {len(known)} labeled training examples exist; lower data.labels")
    if n < num_classes:
        raise DataError(
            f"data.labels={n} is fewer than one per class ({num_classes} classes); use data.labels >= {num_classes}"
        )
    rng = np.random.default_rng(seed)
    per_class = np.full(num_classes, n // num_classes)
    per_class[rng.choice(num_classes, n % num_classes, replace=False)] += 1
    chosen = []
    for k in range(num_classes):
        pool = np.flatnonzero(y == k)
        if per_class[k] > len(pool):
            raise DataError(
                f"data.labels={n} needs {per_class[k]} labeled examples of class {k} but only {len(pool)} exist; "
                "lower data.labels"
            )
        chosen.append(rng.choice(pool, per_class[k], replace=False))
    return np.sort(np.concatenate(chosen))


def _scaler(lo: np.ndarray | float, hi: np.ndarray | float, scale: str):
    """Affine map of [lo, hi] onto [-1, 1] (tanh) or [0, 1] (sigmoid); constant features map to the middle."""
    span = np.where(np.asarray(hi - lo) > 0, hi - lo, 1.0)

    def apply(x: np.ndarray) -> torch.Tensor:
        unit = np.clip((x - lo) / span, 0.0, 1.0)
        out = unit * 2.0 - 1.0 if scale == "tanh" else unit
        return torch.as_tensor(np.ascontiguousarray(out), dtype=torch.float32)

    return apply


def _load_mnist(cfg: DataConfig):
    from torchvision.datasets import MNIST

    root = Path(cfg.root)
    if not cfg.download and not root.is_dir():
        raise DataError(f"data.root {str(root)!r} does not exist; point data.root at a folder holding MNIST/raw "
                        "or set data.download=true")
    try:
        train = MNIST(str(root), train=True, download=cfg.download)
        test = MNIST(str(root), train=False, download=cfg.download)
    except RuntimeError as e:
        raise DataError(f"MNIST not found under {str(root / 'MNIST' / 'raw')!r} ({e}); "
                        "set data.root or data.download=true") from None
    except OSError as e:
        raise DataError(f"could not read or download MNIST into {str(root)!r}: {e}") from None
    # (N, 1, 28, 28) uint8 -> float in [0, 255]
    x_train = train.data.numpy()[:, None].astype(np.float32)
    x_test = test.data.numpy()[:, None].astype(np.float32)
    names = tuple(str(k) for k in range(10))
    return x_train, train.targets.numpy(), x_test, test.targets.numpy(), names, 0.0, 255.0


def _load_digits(cfg: DataConfig):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images[:, None].astype(np.float32)  # (1797, 1, 8, 8), values 0..16
    # A fixed stratified test split: the same 450 test images whatever split_seed is.
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=450, stratify=digits.target, random_state=0
    )
    names = tuple(str(k) for k in range(10))
    return x_train, y_train, x_test, y_test, names, 0.0, 16.0


def _load_npz(cfg: DataConfig):
    path = _existing_path(cfg)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError) as e:
        raise DataError(f"could not read {str(path)!r} as .npz: {e}") from None
    for key in ("X", "y"):
        if key not in arrays:
            raise DataError(f"{str(path)!r} has no array {key!r}; it needs X (features) and y (labels, -1 = unlabeled)")
    x, y = _numeric(arrays["X"], path, "X"), _integer_labels(arrays["y"], path, "y")
    if len(x) != len(y):
        raise DataError(f"{str(path)!r}: X has {len(x)} rows but y has {len(y)}; they must match")
    if "X_test" in arrays:
        x_test, y_test = _numeric(arrays["X_test"], path, "X_test"), _integer_labels(arrays["y_test"], path, "y_test")
        return _finish_user_data(x, y, cfg, path, x_test, y_test)
    return _finish_user_data(x, y, cfg, path)


def _load_csv(cfg: DataConfig):
    path = _existing_path(cfg)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise DataError(f"{str(path)!r} is empty; it needs a header row and data rows")
    header, body = rows[0], [r for r in rows[1:] if r]
    if cfg.label_column not in header:
        raise DataError(f"{str(path)!r} has no label column {cfg.label_column!r} (columns: {', '.join(header)}); "
                        "set data.label_column")
    li = header.index(cfg.label_column)
    features, labels = [], []
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{str(path)!r} line {line}: {len(row)} fields but the header has {len(header)}")
        feats = []
        for j, cell in enumerate(row):
            if j == li:
                continue
            try:
                feats.append(float(cell))
            except ValueError:
                raise DataError(f"{str(path)!r} line {line}, column {header[j]!r}: {cell!r} is not a number; "
                                "features must be numeric") from None
        features.append(feats)
        cell = row[li].strip()
        try:
            label = UNLABELED if cell == "" else int(cell)
        except ValueError:
            raise DataError(f"{str(path)!r} line {line}: label {cell!r} is not an integer "
                            "(use an integer class, or empty / -1 for unlabeled)") from None
        labels.append(label)
    if not features:
        raise DataError(f"{str(path)!r} has a header but no data rows")
    x = _numeric(np.asarray(features, dtype=np.float32), path, "features")
    return _finish_user_data(x, np.asarray(labels, dtype=np.int64), cfg, path)


def _finish_user_data(x, y, cfg: DataConfig, path: Path, x_test=None, y_test=None):
    """Map labels to 0..K-1, hold out a stratified test set if none was given, and find the scaling range."""
    if np.any(y < UNLABELED):
        raise DataError(f"{str(path)!r}: labels must be >= 0, or -1 for unlabeled; found {int(y.min())}")
    classes = np.unique(y[y != UNLABELED] if y_test is None else np.concatenate([y[y != UNLABELED], y_test]))
    if len(classes) < 2:
        raise DataError(f"{str(path)!r}: found {len(classes)} labeled class(es); at least 2 are needed")
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index.get(v, UNLABELED) for v in y], dtype=np.int64)
    if y_test is None:
        from sklearn.model_selection import train_test_split

        known = np.flatnonzero(y != UNLABELED)
        try:  # fixed random_state: the test set never depends on split_seed
            _, test_idx = train_test_split(known, test_size=cfg.test_fraction, stratify=y[known], random_state=0)
        except ValueError as e:
            raise DataError(f"{str(path)!r}: cannot hold out a stratified test set ({e}); "
                            "add labeled rows or pass X_test/y_test") from None
        keep = np.setdiff1d(np.arange(len(y)), test_idx)
        x_test, y_test = x[test_idx], y[test_idx]
        x, y = x[keep], y[keep]
    else:
        y_test = np.asarray([index[v] for v in y_test], dtype=np.int64)
    # training statistics only: per feature for tables, one range for images (N, C, H, W)
    lo, hi = (x.min(axis=0), x.max(axis=0)) if x.ndim == 2 else (float(x.min()), float(x.max()))
    return x, y, x_test, y_test, tuple(str(c) for c in classes), lo, hi


def _existing_path(cfg: DataConfig) -> Path:
    if not cfg.path:
        raise DataError(f"data.name={cfg.name} needs data.path (the .{cfg.name} file)")
    path = Path(cfg.path)
    if not path.is_file():
        raise DataError(f"data.path {str(path)!r} does not exist")
    return path


def _numeric(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{str(path)!r}: {key} has dtype {a.dtype}; features must be numeric")
    a = a.astype(np.float32)
    if a.ndim < 2:
        raise DataError(f"{str(path)!r}: {key} must be (N, features) or (N, C, H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise DataError(f"{str(path)!r}: {key} contains NaN or inf; clean or impute the features first")
    return a


def _integer_labels(a: np.ndarray, path: Path, key: str) -> np.ndarray:
    if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
        a = a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer) or a.ndim != 1:
        raise DataError(f"{str(path)!r}: {key} must be a 1-D array of integer labels (-1 = unlabeled)")
    return a.astype(np.int64)
