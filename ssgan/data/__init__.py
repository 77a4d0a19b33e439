"""Data: labeled/unlabeled/test splits of every supported source, and their preprocessing.

`load_split(cfg.data)` gives a `Split`: the training inputs (labeled subset by index, the rest unlabeled),
the test set and the fitted preprocessing. Sources: scikit-learn's digits, torchvision datasets
(ssgan.data.vision), CSV / parquet tables (ssgan.data.tables), .npz arrays and image folders
(ssgan.data.imagefolder).
"""
from ssgan.data.cache import DATA_ENV, dataset_root
from ssgan.data.preprocess import Preprocessor, fit_for
from ssgan.data.splits import UNLABELED, Split, draw_labeled, load_split

__all__ = ["Split", "load_split", "draw_labeled", "UNLABELED", "Preprocessor", "fit_for", "dataset_root", "DATA_ENV"]
