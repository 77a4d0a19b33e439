"""Datasets and the labeled/unlabeled split.

Every source ends as a `Split`: float training inputs scaled to the generator's range, the labeled
subset's indices, and a fixed test set. As in Salimans et al. 2016, the unlabeled pool is the whole
training set (labeled examples included); the labeled subset is drawn class-balanced from
`data.split_seed`, so every method and mode sees the same labels for the same seed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ssgan.config import DataConfig
from ssgan.data.cache import dataset_root, describe_root, download_failed
from ssgan.errors import DataError
from ssgan.data.preprocess import Preprocessor, fit_for

UNLABELED = -1


@dataclass(frozen=True)
class Split:
    x_train: torch.Tensor  # (N, *input_shape) float32, scaled to the generator's output range
    y_train: torch.Tensor  # (N,) int64 class index, UNLABELED where the label is unknown
    labeled_idx: torch.Tensor  # (L,) indices into x_train of the labeled subset
    x_test: torch.Tensor  # (M, *input_shape)
    y_test: torch.Tensor  # (M,)
    class_names: tuple[str, ...]
    preprocess: Optional[Preprocessor] = None  # raw inputs -> network inputs (fitted on the training rows)
    feature_names: Optional[tuple[str, ...]] = None  # tables: the feature columns, in order

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
    loaders = {"mnist": _load_mnist, "digits": _load_digits, "npz": _load_npz, "csv": _load_table,
               "parquet": _load_table, "imagefolder": _load_imagefolder,
               "fashion_mnist": _vision("fashion_mnist"), "svhn": _vision("svhn"), "cifar10": _vision("cifar10")}
    if cfg.name not in loaders:  # config typing already rejects this; kept for direct callers
        raise DataError(f"unknown dataset {cfg.name!r}; choose one of {', '.join(loaders)}")
    x_train, y_train, x_test, y_test, class_names, lo, hi, *extra = loaders[cfg.name](cfg)
    labeled_idx = draw_labeled(y_train, cfg.labels, cfg.split_seed, len(class_names))
    # tables: standardized per feature; images: one pixel range. Statistics of the training rows only.
    prep = fit_for(x_train, cfg.scale, None if lo is None else (lo, hi))
    return Split(
        x_train=prep(x_train),
        y_train=torch.as_tensor(y_train, dtype=torch.int64),
        labeled_idx=torch.as_tensor(labeled_idx, dtype=torch.int64),
        x_test=prep(x_test),
        y_test=torch.as_tensor(y_test, dtype=torch.int64),
        class_names=class_names,
        preprocess=prep,
        feature_names=tuple(extra[0]) if extra else None,
    )


def _vision(name: str):
    def load(cfg: DataConfig):
        from ssgan.data import vision as vision_datasets

        return getattr(vision_datasets, f"load_{name}")(cfg)

    return load


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


def _load_mnist(cfg: DataConfig):
    from torchvision.datasets import MNIST

    root = dataset_root(cfg)
    if cfg.download:
        try:
            for is_train in (True, False):
                MNIST(str(root), train=is_train, download=True)  # no network needed when the files are there
        except Exception as e:  # network, checksum or file-system errors, of many types
            raise download_failed("MNIST", root, e) from None
    elif not root.is_dir():
        raise DataError(f"{describe_root(cfg)} does not exist; point data.root (or $SSGAN_DATA) at a folder holding "
                        "MNIST/raw or set data.download=true (needs internet)")
    try:
        train = MNIST(str(root), train=True)
        test = MNIST(str(root), train=False)
    except RuntimeError as e:
        raise DataError(f"MNIST not found under {str(root / 'MNIST' / 'raw')!r} ({e}); point data.root (or "
                        "$SSGAN_DATA) at the folder that holds MNIST/raw or set data.download=true") from None
    except OSError as e:
        raise DataError(f"could not read MNIST in {str(root)!r}: {e}") from None
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


def _load_table(cfg: DataConfig):
    """csv / parquet: label column + feature columns; a separate labeled test file when data.test_path is set."""
    from ssgan.data.tables import encode_labels, load_table

    path = _existing_path(cfg)
    x, names, raw = load_table(path, cfg.label_column, cfg.feature_columns)
    x_test = raw_test = None
    if cfg.test_path:
        test_path = Path(cfg.test_path)
        if not test_path.is_file():
            raise DataError(f"data.test_path {str(test_path)!r} does not exist")
        x_test, _, raw_test = load_table(test_path, cfg.label_column, names)
    y, y_test, classes = encode_labels(raw, path, raw_test)
    if x_test is None:
        x, y, x_test, y_test = _hold_out_test(x, y, cfg, path)
    return x, y, x_test, y_test, classes, None, None, names


def _load_imagefolder(cfg: DataConfig):
    """ROOT/<class>/ images + ROOT/<unlabeled_dir>/ images; test: data.test_path (same layout) or held out."""
    from ssgan.data.imagefolder import load_image_folder

    if cfg.root is None:
        raise DataError("data.name=imagefolder needs data.root: the folder of <class>/ subfolders of images")
    root = Path(cfg.root).expanduser()
    x, y, classes = load_image_folder(root, cfg.unlabeled_dir, cfg.image_size, cfg.color)
    if cfg.test_path:
        x_test, y_test, test_classes = load_image_folder(Path(cfg.test_path), None, x.shape[2:], cfg.color)
        if test_classes != classes:
            raise DataError(f"data.test_path {cfg.test_path!r} has classes {list(test_classes)} but data.root has "
                            f"{list(classes)}; they must match")
    else:
        x, y, x_test, y_test = _hold_out_test(x, y, cfg, root)
    return x, y, x_test, y_test, classes, 0.0, 255.0


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
        x, y, x_test, y_test = _hold_out_test(x, y, cfg, path)
    else:
        y_test = np.asarray([index[v] for v in y_test], dtype=np.int64)
    # images (N, C, H, W): one range from the training rows; tables are standardized in load_split
    lo, hi = (None, None) if x.ndim == 2 else (float(x.min()), float(x.max()))
    return x, y, x_test, y_test, tuple(str(c) for c in classes), lo, hi


def _hold_out_test(x: np.ndarray, y: np.ndarray, cfg: DataConfig, path: Path):
    """A stratified test set of `data.test_fraction` of the labeled rows, the same for every split_seed."""
    from sklearn.model_selection import train_test_split

    known = np.flatnonzero(y != UNLABELED)
    try:  # fixed random_state: the test set never depends on split_seed
        _, test_idx = train_test_split(known, test_size=cfg.test_fraction, stratify=y[known], random_state=0)
    except ValueError as e:
        raise DataError(f"{str(path)!r}: cannot hold out a stratified test set ({e}); "
                        "add labeled rows or give a labeled test set (data.test_path, or X_test/y_test in .npz)") from None
    keep = np.setdiff1d(np.arange(len(y)), test_idx)
    return x[keep], y[keep], x[test_idx], y[test_idx]


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
