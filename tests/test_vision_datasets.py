"""Fashion-MNIST, SVHN and CIFAR-10: read from tiny files in each dataset's real on-disk format.

Nothing is downloaded: every test writes its own files into tmp_path, and the download path is
exercised with a stand-in for the torchvision class.
"""
import pickle
import re
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from ssgan.data import vision as vision_datasets
from ssgan.config import Config, DataConfig, replace
from ssgan.data.splits import load_split
from ssgan.errors import DataError
from ssgan.training.fit import fit

N_TRAIN, N_TEST = 30, 10
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SHAPES = {"fashion_mnist": (1, 28, 28), "svhn": (3, 32, 32), "cifar10": (3, 32, 32)}
CLASS_NAMES = {"fashion_mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                 "Sneaker", "Bag", "Ankle boot"),
               "svhn": tuple("0123456789"), "cifar10": CIFAR10_NAMES}


def images(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, C, H, W) uint8 images holding both 0 and 255, and labels cycling through the 10 classes."""
    x = np.random.default_rng(seed).integers(0, 256, (n, *SHAPES[name]), dtype=np.uint8)
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = 0, 255
    return x, np.arange(n) % 10


def write_idx(path: Path, a: np.ndarray) -> None:
    """idx format: big-endian magic 0x0000080D (uint8, D dims: 2049 labels, 2051 images), the dims, the bytes."""
    path.write_bytes(struct.pack(">I", 0x800 + a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes())


def write_fashion_mnist(root: Path, parts: dict) -> None:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, (x, y) in (("train", parts["train"]), ("t10k", parts["test"])):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:, 0])  # (N, 28, 28)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8))


def write_svhn(root: Path, parts: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in parts.items():
        y_file = np.where(y == 0, 10, y).astype(np.uint8)[:, None]  # (N, 1), digit 0 stored as 10
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x.transpose(2, 3, 1, 0), "y": y_file})  # (32, 32, 3, N)


def write_cifar10(root: Path, parts: dict) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, entry: dict) -> None:
        (folder / name).write_bytes(pickle.dumps(entry))

    x, y = parts["train"]
    for i, rows in enumerate(np.array_split(np.arange(len(x)), 5), start=1):  # five training batches, in order
        dump(f"data_batch_{i}", {b"data": x[rows].reshape(len(rows), 3072), b"labels": y[rows].tolist()})
    dump("test_batch", {b"data": parts["test"][0].reshape(-1, 3072), b"labels": parts["test"][1].tolist()})
    dump("batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072})


WRITERS = {"fashion_mnist": write_fashion_mnist, "svhn": write_svhn, "cifar10": write_cifar10}
LOADERS = {"fashion_mnist": vision_datasets.load_fashion_mnist, "svhn": vision_datasets.load_svhn,
           "cifar10": vision_datasets.load_cifar10}
FOLDERS = {"fashion_mnist": "FashionMNIST/raw", "svhn": "", "cifar10": "cifar-10-batches-py"}


def write(name: str, root: Path) -> dict:
    """Tiny files of dataset `name` under `root`; returns the (N, C, H, W) images and labels written."""
    parts = {"train": images(name, N_TRAIN, 0), "test": images(name, N_TEST, 1)}
    WRITERS[name](root, parts)
    return parts


def data_cfg(name: str, root: Path, **changes) -> DataConfig:
    return replace(Config(), **{"data.name": name, "data.root": str(root), "data.labels": 10, **changes}).data


@pytest.mark.parametrize("name", list(WRITERS))
def test_loader_returns_the_images_as_written_in_nchw(name, tmp_path):
    parts = write(name, tmp_path)
    x_train, y_train, x_test, y_test, class_names, lo, hi = LOADERS[name](data_cfg(name, tmp_path))
    assert x_train.dtype == x_test.dtype == np.float32 and y_train.dtype == y_test.dtype == np.int64
    assert np.array_equal(x_train, parts["train"][0]) and np.array_equal(y_train, parts["train"][1])
    assert np.array_equal(x_test, parts["test"][0]) and np.array_equal(y_test, parts["test"][1])
    assert class_names == CLASS_NAMES[name] and (lo, hi) == (0.0, 255.0)


def test_svhn_label_10_is_digit_0(tmp_path):
    write("svhn", tmp_path)
    assert scipy.io.loadmat(tmp_path / "train_32x32.mat")["y"].min() == 1  # the file knows no 0 ...
    _, y_train, _, _, names, _, _ = LOADERS["svhn"](data_cfg("svhn", tmp_path))
    assert y_train.min() == 0 and names[0] == "0"  # ... the loader does


def test_cifar10_rows_are_rgb_planes_row_major(tmp_path):
    write("cifar10", tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="bytes")[b"data"][2]  # image 2, as stored: (3072,)
    x_train = LOADERS["cifar10"](data_cfg("cifar10", tmp_path))[0]
    c, h, w = 1, 5, 7  # green channel, row 5, column 7
    assert x_train[2, c, h, w] == row[c * 1024 + h * 32 + w]


@pytest.mark.parametrize("name", list(WRITERS))
def test_split_is_scaled_to_tanh_range_with_a_class_balanced_labeled_draw(name, tmp_path):
    write(name, tmp_path)
    split = load_split(data_cfg(name, tmp_path, **{"data.scale": "tanh"}))
    assert split.x_train.shape == (N_TRAIN, *SHAPES[name]) and split.x_test.shape == (N_TEST, *SHAPES[name])
    assert split.x_train.min() == -1.0 and split.x_train.max() == 1.0  # pixels 0 and 255
    assert split.class_names == CLASS_NAMES[name] and split.num_classes == 10
    assert np.bincount(split.y_train[split.labeled_idx].numpy(), minlength=10).tolist() == [1] * 10


@pytest.mark.parametrize("name", list(WRITERS))
def test_missing_root_names_it_and_says_how_to_fix(name, tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(DataError, match=f"{re.escape(str(root))}.*does not exist.*data.download=true"):
        load_split(data_cfg(name, root))


@pytest.mark.parametrize("name", list(WRITERS))
def test_without_data_root_the_files_are_read_from_ssgan_data(name, tmp_path, monkeypatch):
    write(name, tmp_path / "shared")
    monkeypatch.setenv("SSGAN_DATA", str(tmp_path / "shared"))
    split = load_split(replace(Config(), **{"data.name": name, "data.labels": 10}).data)  # data.root: null
    assert split.x_train.shape == (N_TRAIN, *SHAPES[name])


@pytest.mark.parametrize("name,file", [("fashion_mnist", "t10k-labels-idx1-ubyte"), ("svhn", "test_32x32.mat"),
                                       ("cifar10", "data_batch_4"), ("cifar10", "batches.meta")])
def test_missing_file_names_folder_and_file(name, file, tmp_path):
    write(name, tmp_path)
    folder = tmp_path / FOLDERS[name]
    (folder / file).unlink()
    with pytest.raises(DataError, match=f"not found in '{re.escape(str(folder))}' \\(missing {file}\\)") as e:
        load_split(data_cfg(name, tmp_path))
    assert "data.download=true" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("name,file", [("fashion_mnist", "train-images-idx3-ubyte"),
                                       ("fashion_mnist", "train-labels-idx1-ubyte"), ("svhn", "train_32x32.mat"),
                                       ("cifar10", "data_batch_3"), ("cifar10", "batches.meta")])
def test_corrupt_file_is_named(name, file, tmp_path):
    write(name, tmp_path)
    path = tmp_path / FOLDERS[name] / file
    path.write_bytes(b"\x00\x01 not the dataset's format " * 4)
    with pytest.raises(DataError, match=f"could not read '{re.escape(str(path))}'.*corrupt"):
        load_split(data_cfg(name, tmp_path))


def test_truncated_idx_file_is_named(tmp_path):
    write("fashion_mnist", tmp_path)
    path = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])  # a download cut short
    with pytest.raises(DataError, match=f"could not read '{re.escape(str(path))}'"):
        load_split(data_cfg("fashion_mnist", tmp_path))


def test_svhn_with_wrong_image_layout(tmp_path):
    write("svhn", tmp_path)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((30, 3, 32, 32), np.uint8), "y": np.ones((30, 1))})
    with pytest.raises(DataError, match=r"train_32x32.mat.*\(30, 3, 32, 32\).*\(32, 32, 3, N\)"):
        load_split(data_cfg("svhn", tmp_path))


def test_svhn_label_outside_1_to_10(tmp_path):
    write("svhn", tmp_path)
    mat = scipy.io.loadmat(tmp_path / "test_32x32.mat")
    mat["y"][3] = 0  # SVHN has no label 0: digit 0 is 10
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": mat["X"], "y": mat["y"]})
    with pytest.raises(DataError, match=r"test_32x32.mat.*labels must be 1..10.*found 0..10"):
        load_split(data_cfg("svhn", tmp_path))


@pytest.mark.parametrize("entry,message", [
    ({b"data": np.zeros((6, 1024), np.uint8), b"labels": [0] * 6}, r"shape \(6, 1024\).*\(N, 3072\)"),
    ({b"data": np.zeros((6, 3072), np.uint8), b"labels": [0] * 5}, "expected 6 integer labels"),
    ({b"data": np.zeros((6, 3072), np.uint8), b"labels": [10] * 6}, r"labels must be 0..9; found 10..10"),
    ({"data": np.zeros((6, 3072), np.uint8), "labels": [0] * 6}, "KeyError"),  # str keys: not the documented format
])
def test_malformed_cifar10_batch(entry, message, tmp_path):
    write("cifar10", tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(pickle.dumps(entry))
    with pytest.raises(DataError, match=f"{re.escape(str(path))}.*{message}"):
        load_split(data_cfg("cifar10", tmp_path))


TORCHVISION_CLASSES = {"fashion_mnist": "FashionMNIST", "svhn": "SVHN", "cifar10": "CIFAR10"}


@pytest.mark.parametrize("name", list(WRITERS))
def test_download_goes_through_torchvision_then_reads_the_files(name, tmp_path, monkeypatch):
    calls = []

    def fake_torchvision_class(root, download, **split):  # writes the files, as a download would
        calls.append((root, download))
        if len(calls) == 1:
            write(name, Path(root))

    monkeypatch.setattr(vision_datasets, TORCHVISION_CLASSES[name], fake_torchvision_class)
    split = load_split(data_cfg(name, tmp_path / "new", **{"data.download": True}))
    assert calls and all(c == (str(tmp_path / "new"), True) for c in calls)
    assert split.x_train.shape == (N_TRAIN, *SHAPES[name])


def test_failed_download_is_one_line_naming_the_root(tmp_path, monkeypatch):
    def offline(root, download, **split):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(vision_datasets, "CIFAR10", offline)
    with pytest.raises(DataError, match=f"could not download CIFAR-10 into '{re.escape(str(tmp_path))}'.*URLError"):
        load_split(data_cfg("cifar10", tmp_path, **{"data.download": True}))


@pytest.mark.parametrize("name", ["cifar10", "fashion_mnist"])
def test_conv_model_trains_on_the_images(name, tmp_path):
    write(name, tmp_path)
    cfg = replace(Config(), **{"data.name": name, "data.root": str(tmp_path), "data.labels": 10,
                               "model.arch": "conv", "model.conv_width": 4, "model.noise_dim": 8,
                               "train.epochs": 1, "train.steps_per_epoch": 2, "train.batch_size": 10,
                               "train.device": "cpu"})
    result = fit(cfg, load_split(cfg.data), progress=False)
    assert result.stop_reason == "completed" and len(result.history) == 1
    with torch.no_grad():
        assert result.generator(torch.rand(2, 8)).shape == (2, *SHAPES[name])
