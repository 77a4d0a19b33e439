"""Torchvision image datasets: Fashion-MNIST, SVHN and CIFAR-10, as raw pixels for `ssgan.data.splits.load_split`.

Each loader returns `(x_train, y_train, x_test, y_test, class_names, lo, hi)`: x float32 (N, C, H, W) holding
pixel values 0..255, y int64 class indices, and the pixel range (0, 255). With `data.download: true` the
files are fetched through torchvision's dataset class (which checks their MD5 sums); either way they are
read here, from their documented on-disk formats, so that every file is checked and a missing, corrupt or
malformed one is a one-line `DataError` naming it.

On disk, under `data.root` (null: `$SSGAN_DATA`, else `~/.cache/ssgan/datasets`; ssgan/data/cache.py):
  Fashion-MNIST  FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte  (idx, as MNIST)
  SVHN           {train,test}_32x32.mat       X: (32, 32, 3, N) uint8, y: (N, 1) with 10 meaning digit 0
  CIFAR-10       cifar-10-batches-py/data_batch_1..5, test_batch: pickles of b"data" (N, 3072) uint8,
                 each row the R, G and B planes, row-major; b"labels"; batches.meta: b"label_names"
"""
from __future__ import annotations

import contextlib
import pickle
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from torchvision.datasets import CIFAR10, SVHN, FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from ssgan.config import DataConfig
from ssgan.data.cache import dataset_root, describe_root, download_failed
from ssgan.errors import DataError

VisionData = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], float, float]

NUM_CLASSES = 10
FASHION_MNIST_CLASSES = tuple(FashionMNIST.classes)  # "T-shirt/top", "Trouser", ..., "Ankle boot"
SVHN_CLASSES = tuple(str(d) for d in range(NUM_CLASSES))
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def load_fashion_mnist(cfg: DataConfig) -> VisionData:
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 1x28x28 grayscale images of 10 kinds of clothing."""
    files = [f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    folder = _dataset_folder(cfg, "Fashion-MNIST", "FashionMNIST/raw", files,
                             lambda root: [FashionMNIST(root, train=t, download=True) for t in (True, False)])
    x_train, y_train = _read_idx(folder, "train")
    x_test, y_test = _read_idx(folder, "t10k")
    return _pixels(x_train, y_train, x_test, y_test, FASHION_MNIST_CLASSES)


def load_svhn(cfg: DataConfig) -> VisionData:
    """SVHN (Netzer et al. 2011), cropped digits: 73,257/26,032 3x32x32 images; the "extra" set is not used."""
    files = ["train_32x32.mat", "test_32x32.mat"]
    folder = _dataset_folder(cfg, "SVHN", "", files,  # torchvision keeps SVHN's files directly in its root
                             lambda root: [SVHN(root, split=s, download=True) for s in ("train", "test")])
    x_train, y_train = _read_svhn_mat(folder / files[0])
    x_test, y_test = _read_svhn_mat(folder / files[1])
    return _pixels(x_train, y_train, x_test, y_test, SVHN_CLASSES)


def load_cifar10(cfg: DataConfig) -> VisionData:
    """CIFAR-10 (Krizhevsky 2009): 50k/10k 3x32x32 images of 10 object classes."""
    files = [*CIFAR10_TRAIN, "test_batch", "batches.meta"]
    folder = _dataset_folder(cfg, "CIFAR-10", CIFAR10_FOLDER, files,
                             lambda root: CIFAR10(root, train=True, download=True))  # fetches the test batch too
    train = [_read_cifar_batch(folder / name) for name in CIFAR10_TRAIN]
    x_train, y_train = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    return _pixels(x_train, y_train, x_test, y_test, _read_cifar_names(folder / "batches.meta"))


def _dataset_folder(cfg: DataConfig, name: str, sub: str, files: Sequence[str],
                    download: Callable[[str], object]) -> Path:
    """ROOT/sub, checked to hold `files`; with data.download, `download(root)` (torchvision) runs first."""
    root = dataset_root(cfg)
    folder = root / sub
    if cfg.download:
        try:
            download(str(root))
        except Exception as e:  # network, checksum or file-system errors, of many types
            raise download_failed(name, root, e) from None
    elif not root.is_dir():
        raise DataError(f"{describe_root(cfg)} does not exist; point data.root (or $SSGAN_DATA) at a folder holding "
                        f"{name} ({str(Path(sub, files[0]))}, ...) or set data.download=true (needs internet)")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        holding = f"the folder that holds {sub}/" if sub else "the folder holding the files"
        raise DataError(f"{name} not found in {str(folder)!r} (missing {', '.join(missing)}); point data.root "
                        f"(or $SSGAN_DATA) at {holding} or set data.download=true (needs internet)")
    return folder


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Any failure to parse `path` becomes a DataError naming it (parsers of arbitrary bytes raise anything)."""
    try:
        yield
    except Exception as e:
        raise DataError(f"could not read {str(path)!r} ({type(e).__name__}: {e}); the file is corrupt or not in "
                        "the dataset's format: replace it, or delete it and set data.download=true") from None


def _read_idx(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = folder / f"{prefix}-images-idx3-ubyte", folder / f"{prefix}-labels-idx1-ubyte"
    with _reading(images):
        x = read_image_file(str(images)).numpy()[:, None]  # (N, 28, 28) uint8 -> (N, 1, 28, 28)
    with _reading(labels):
        y = read_label_file(str(labels)).numpy()
    return x, _checked_labels(y, len(x), labels)


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    with _reading(path):
        mat = scipy.io.loadmat(str(path))
        x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{str(path)!r}: X is {x.dtype} of shape {x.shape}; SVHN stores uint8 images as (32, 32, 3, N)")
    y = y.astype(np.int64).ravel()
    if len(y) and (y.min() < 1 or y.max() > NUM_CLASSES):
        raise DataError(f"{str(path)!r}: labels must be 1..10 (10 = digit 0); found {int(y.min())}..{int(y.max())}")
    y[y == 10] = 0  # SVHN labels the digit 0 as 10
    x = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return x, _checked_labels(y, x.shape[0], path)


def _unpickle(path: Path) -> object:
    with _reading(path), open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")  # Python 2 pickles: keys come back as bytes, as documented


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    entry = _unpickle(path)
    with _reading(path):
        data, labels = np.asarray(entry[b"data"]), np.asarray(entry[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{str(path)!r}: data is {data.dtype} of shape {data.shape}; CIFAR-10 stores uint8 rows "
                        "of 3072 pixels (N, 3072)")
    x = data.reshape(-1, 3, 32, 32)  # each row: the R, G and B planes, each 32x32 row-major -> (N, 3, 32, 32)
    return x, _checked_labels(labels, len(x), path)


def _read_cifar_names(path: Path) -> tuple[str, ...]:
    meta = _unpickle(path)
    with _reading(path):
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"])
    if len(names) != NUM_CLASSES:
        raise DataError(f"{str(path)!r}: label_names has {len(names)} names; CIFAR-10 has {NUM_CLASSES}")
    return names


def _checked_labels(y: np.ndarray, n: int, path: Path) -> np.ndarray:
    """Labels as int64, one per image and each a class index 0..9."""
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1 or len(y) != n:
        raise DataError(f"{str(path)!r}: expected {n} integer labels (one per image), got {y.dtype} of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"{str(path)!r}: labels must be 0..{NUM_CLASSES - 1}; found {int(y.min())}..{int(y.max())}")
    return y.astype(np.int64)


def _pixels(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
            class_names: tuple[str, ...]) -> VisionData:
    """uint8 images -> float32 (N, C, H, W) in [0, 255], with the fixed pixel range as the scaling range."""
    return x_train.astype(np.float32), y_train, x_test.astype(np.float32), y_test, class_names, 0.0, 255.0
