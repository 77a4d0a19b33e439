"""Bring your own data: tables (.csv, .parquet) and image folders, read into the same `Split`."""
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.io import write_png

from ssgan.config import DataConfig
from ssgan.data.splits import UNLABELED, load_split
from ssgan.errors import DataError


def table(n=60, seed=0) -> pd.DataFrame:
    """Two informative features on very different scales, a constant one, names as labels, 1/4 unlabeled."""
    rng = np.random.default_rng(seed)
    k = np.arange(n) % 3
    df = pd.DataFrame({"size": 1000.0 * k + rng.normal(0, 50, n), "ratio": 0.01 * k + rng.normal(0, 0.001, n),
                       "const": 7.0, "species": np.array(["ant", "bee", "cat"])[k]})
    df.loc[df.index % 4 == 0, "species"] = None
    return df


def write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        write_png(torch.as_tensor(img, dtype=torch.uint8), str(folder / f"{i}.png"))


def image_root(tmp_path, n_per_class=8, unlabeled=6, size=(12, 10)):
    """ROOT/dark/*.png, ROOT/bright/*.png (RGB) and ROOT/unlabeled/*.png of mixed brightness."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for name, level in (("dark", 30), ("bright", 220)):
        write_pngs(root / name, [np.full((3, *size), level) + rng.integers(0, 20, (3, *size)) for _ in range(n_per_class)])
    write_pngs(root / "unlabeled", [np.full((3, *size), (30, 220)[i % 2]) for i in range(unlabeled)])
    return root


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_standardize_features_with_training_statistics_and_keep_class_names(tmp_path, fmt):
    path = tmp_path / f"t.{fmt}"
    df = table()
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    split = load_split(DataConfig(name=fmt, path=str(path), label_column="species", labels=None, test_fraction=0.25))
    assert split.class_names == ("ant", "bee", "cat") and split.feature_names == ("size", "ratio", "const")
    assert (split.y_train == UNLABELED).sum() == 15 and len(split.x_test) == 12  # a quarter of the 45 labeled rows
    # statistics from the 48 training rows only: their features have mean 0 and std 1 before the squash
    z = split.x_train.numpy() * split.preprocess.clip  # undo the [-clip, clip] -> [-1, 1] map (no clipping here)
    assert np.allclose(z[:, :2].mean(0), 0, atol=1e-5) and np.allclose(z[:, :2].std(0), 1, atol=1e-4)
    assert np.all(z[:, 2] == 0)  # a constant feature sits in the middle
    assert split.x_test.abs().max() <= 1.0


def test_feature_columns_are_selected_by_name_and_a_labeled_test_file_can_be_given(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    table().to_csv(train, index=False)
    table(30, seed=1).dropna().assign(extra=1.0).to_csv(test, index=False)
    split = load_split(DataConfig(name="csv", path=str(train), test_path=str(test), label_column="species",
                                  feature_columns=("ratio", "size"), labels=6))
    assert split.feature_names == ("ratio", "size") and split.input_shape == (2,)
    assert len(split.x_train) == 60 and len(split.x_test) == 22 and len(split.labeled_idx) == 6


@pytest.mark.parametrize("change,message", [
    (lambda df: df.drop(columns="species"), "no label column 'species'"),
    (lambda df: df.assign(size=df["size"].where(df.index != 4)), "column 'size' has 1 missing"),
    (lambda df: df.assign(ratio=df["ratio"].astype(object).where(df.index != 2, "heavy")), "'heavy' is not a number"),
    (lambda df: df.assign(species=None), "found 0 labeled class"),
])
def test_bad_tables_name_the_problem(tmp_path, change, message):
    path = tmp_path / "bad.csv"
    change(table()).to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        load_split(DataConfig(name="csv", path=str(path), label_column="species", labels=None))


def test_missing_feature_columns_are_named(tmp_path):
    path = tmp_path / "t.parquet"
    table().to_parquet(path)
    with pytest.raises(DataError, match="no column\\(s\\) 'weight'"):
        load_split(DataConfig(name="parquet", path=str(path), label_column="species", feature_columns=("size", "weight")))


def test_image_folder_classes_unlabeled_images_resize_and_color(tmp_path):
    root = image_root(tmp_path)
    split = load_split(DataConfig(name="imagefolder", root=str(root), labels=None, test_fraction=0.25, image_size=(8, 8)))
    assert split.class_names == ("bright", "dark")  # the unlabeled folder is not a class
    assert split.input_shape == (3, 8, 8)
    assert len(split.x_train) + len(split.x_test) == 22 and (split.y_train == UNLABELED).sum() == 6
    assert -1.0 <= split.x_train.min() and split.x_train.max() <= 1.0
    bright = split.x_train[split.y_train == 0].mean()
    assert bright > split.x_train[split.y_train == 1].mean() + 1.0  # pixel values survive decoding
    gray = load_split(DataConfig(name="imagefolder", root=str(root), labels=None, color="gray"))
    assert gray.input_shape == (1, 12, 10)  # null image_size: the first image's size


def test_unreadable_images_are_skipped_with_a_count(tmp_path, caplog):
    root = image_root(tmp_path)
    (root / "dark" / "broken.png").write_bytes(b"not a png")
    (root / "unlabeled" / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="ssgan"):
        split = load_split(DataConfig(name="imagefolder", root=str(root), labels=None))
    assert len(split.x_train) + len(split.x_test) == 22
    assert any("skipped 2 unreadable image file(s)" in r.getMessage() for r in caplog.records)


def test_bad_image_folders_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_split(DataConfig(name="imagefolder", root=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_split(DataConfig(name="imagefolder", root=str(tmp_path / "empty")))
    root = image_root(tmp_path)
    (root / "cat").mkdir()
    with pytest.raises(DataError, match="class folder\\(s\\) 'cat' hold no images"):
        load_split(DataConfig(name="imagefolder", root=str(root)))
    (root / "cat").rmdir()
    for f in root.rglob("*.png"):
        f.write_bytes(b"garbage")
    with pytest.raises(DataError, match="none of its 22 image file\\(s\\) could be read"):
        load_split(DataConfig(name="imagefolder", root=str(root)))
