"""The labeled split: class-balanced, reproducible, seed-dependent; user data and its errors."""
import numpy as np
import pytest

from ssgan.config import DataConfig
from ssgan.data.cache import dataset_root
from ssgan.data.splits import UNLABELED, draw_labeled, load_split
from ssgan.errors import DataError


def test_labeled_subset_is_class_balanced():
    y = np.repeat(np.arange(10), 50)
    idx = draw_labeled(y, 100, seed=0, num_classes=10)
    assert len(idx) == len(set(idx)) == 100
    assert np.bincount(y[idx]).tolist() == [10] * 10


def test_remainder_goes_to_distinct_classes():
    y = np.repeat(np.arange(3), 20)
    counts = np.bincount(y[draw_labeled(y, 8, seed=1, num_classes=3)])
    assert sorted(counts.tolist()) == [2, 3, 3]


def test_draw_is_reproducible_and_differs_across_seeds():
    y = np.repeat(np.arange(10), 100)
    a, b = draw_labeled(y, 50, 3, 10), draw_labeled(y, 50, 3, 10)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, draw_labeled(y, 50, 4, 10))


def test_draw_never_picks_unlabeled_rows():
    y = np.repeat(np.arange(2), 30)
    y[::2] = UNLABELED
    idx = draw_labeled(y, 10, 0, 2)
    assert (y[idx] != UNLABELED).all()
    assert np.array_equal(draw_labeled(y, None, 0, 2), np.flatnonzero(y != UNLABELED))


def test_too_many_or_too_few_labels():
    y = np.repeat(np.arange(10), 5)
    with pytest.raises(DataError, match="only 50 labeled"):
        draw_labeled(y, 51, 0, 10)
    with pytest.raises(DataError, match="fewer than one per class"):
        draw_labeled(y, 9, 0, 10)
    with pytest.raises(DataError, match="class 0"):
        draw_labeled(np.array([0, 1, 1, 1, 1, 1]), 4, 0, 2)


def test_digits_split_scaled_to_tanh_range_with_fixed_test_set():
    a = load_split(DataConfig(name="digits", labels=20, split_seed=0))
    b = load_split(DataConfig(name="digits", labels=20, split_seed=1, scale="sigmoid"))
    assert a.x_train.shape == (1347, 1, 8, 8) and a.x_test.shape == (450, 1, 8, 8)
    assert a.x_train.min() == -1.0 and a.x_train.max() == 1.0
    assert b.x_train.min() == 0.0 and b.x_train.max() == 1.0
    assert np.array_equal(a.y_test.numpy(), b.y_test.numpy())  # the test set does not move with the seed
    assert a.split_hash != b.split_hash
    assert len(a.labeled_idx) == 20 and len(a.x_train) == 1347  # unlabeled pool = whole training set


def test_npz_with_hidden_labels(npz_path):
    split = load_split(DataConfig(name="npz", path=str(npz_path), labels=6))
    assert split.num_classes == 3 and split.class_names == ("0", "1", "2")
    assert len(split.x_train) == 120 and len(split.x_test) == 30
    assert (split.y_train == UNLABELED).sum() == 40
    assert split.input_shape == (1, 8, 8)
    assert -1.0 <= split.x_test.min() and split.x_test.max() <= 1.0


def test_csv_labels_empty_or_minus_one_are_unlabeled(tmp_path):
    path = tmp_path / "t.csv"
    rows = ["a,b,label"] + [f"{i},{i % 3 * 10},{i % 3}" for i in range(30)] + ["1,2,", "3,4,-1"]
    path.write_text("\n".join(rows) + "\n")
    split = load_split(DataConfig(name="csv", path=str(path), labels=None, test_fraction=0.2))
    assert split.input_shape == (2,)
    assert (split.y_train == UNLABELED).sum() == 2
    assert len(split.x_test) == 6 and len(split.labeled_idx) == 24


@pytest.mark.parametrize(
    "content,message",
    [
        ("a,label\nfoo,1\n2,0\n", "'foo' is not a number"),
        ("a,label\n1,1.5\n2,0\n", "'1.5' is not an integer"),
        ("a,b\n1,1\n", "no label column 'label'"),
        ("a,label\nnan,1\n2,0\n", "NaN"),
        ("", "empty"),
    ],
)
def test_bad_csv(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_split(DataConfig(name="csv", path=str(path)))


def test_missing_files_and_roots(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_split(DataConfig(name="npz", path=str(tmp_path / "nope.npz")))
    with pytest.raises(DataError, match="needs data.path"):
        load_split(DataConfig(name="csv"))
    with pytest.raises(DataError, match="does not exist"):
        load_split(DataConfig(name="mnist", root=str(tmp_path / "nowhere")))
    with pytest.raises(DataError, match="MNIST not found"):
        load_split(DataConfig(name="mnist", root=str(tmp_path)))


def test_torchvision_datasets_live_in_data_root_else_ssgan_data_else_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSGAN_DATA", raising=False)
    assert DataConfig(name="mnist").root is None
    assert dataset_root(DataConfig(name="mnist")) == tmp_path / "home" / ".cache" / "ssgan" / "datasets"
    monkeypatch.setenv("SSGAN_DATA", str(tmp_path / "shared"))
    assert dataset_root(DataConfig(name="mnist")) == tmp_path / "shared"
    assert dataset_root(DataConfig(name="mnist", root=str(tmp_path / "mine"))) == tmp_path / "mine"


def test_offline_without_files_says_where_it_looked_and_how_to_point_elsewhere(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(root, train=True, download=False):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n")  # torchvision's, after each mirror

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSGAN_DATA", raising=False)
    cache = tmp_path / ".cache" / "ssgan" / "datasets"
    with pytest.raises(DataError) as e:
        load_split(DataConfig(name="mnist", download=True))
    assert str(e.value) == (f"could not download MNIST into '{cache}' (RuntimeError: Error downloading "
                            "train-images-idx3-ubyte.gz: Tried https://mirror/, got: <urlopen error [Errno -2] Name "
                            "or service not known>); check the connection, or point data.root (or $SSGAN_DATA) at "
                            "the folder that holds the files and set data.download=false")  # one line
    with pytest.raises(DataError) as e:
        load_split(DataConfig(name="mnist"))
    assert str(e.value) == (f"the dataset cache '{cache}' (data.root and $SSGAN_DATA are not set) does not exist; "
                            "point data.root (or $SSGAN_DATA) at a folder holding MNIST/raw or set data.download=true "
                            "(needs internet)")
    monkeypatch.setenv("SSGAN_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match=f"^\\$SSGAN_DATA '{tmp_path / 'elsewhere'}' does not exist"):
        load_split(DataConfig(name="mnist"))


def test_image_folder_needs_data_root():
    with pytest.raises(DataError, match="data.name=imagefolder needs data.root: the folder of <class>/ subfolders"):
        load_split(DataConfig(name="imagefolder"))


def test_npz_without_y(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, X=np.zeros((4, 2)))
    with pytest.raises(DataError, match="no array 'y'"):
        load_split(DataConfig(name="npz", path=str(path)))


def _write_idx(path, array: np.ndarray) -> None:
    """MNIST's IDX format: zero, zero, dtype 0x08 (ubyte), rank, big-endian dims, raw bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    split = load_split(DataConfig(name="mnist", root=str(tmp_path), labels=20, split_seed=0))
    assert split.x_train.shape == (40, 1, 28, 28) and split.x_test.shape == (10, 1, 28, 28)
    assert split.num_classes == 10 and np.bincount(split.y_train[split.labeled_idx].numpy()).tolist() == [2] * 10
    assert -1.0 <= split.x_train.min() and split.x_train.max() <= 1.0
