"""Where the torchvision datasets (MNIST, Fashion-MNIST, SVHN, CIFAR-10) live on disk.

`data.root` when the config sets it; otherwise `$SSGAN_DATA`; otherwise `~/.cache/ssgan/datasets`.
With `data.download: true` torchvision fetches missing files into that folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from ssgan.config import DataConfig
from ssgan.errors import DataError

DATA_ENV = "SSGAN_DATA"
DEFAULT_CACHE = "~/.cache/ssgan/datasets"


def dataset_root(cfg: DataConfig) -> Path:
    """The folder the torchvision datasets are read from (and downloaded into)."""
    if cfg.root is not None:
        return Path(cfg.root).expanduser()
    return Path(os.environ.get(DATA_ENV) or DEFAULT_CACHE).expanduser()


def describe_root(cfg: DataConfig) -> str:
    """Names the folder and where it came from, for error messages: `data.root '/x'`, `$SSGAN_DATA '/x'` or
    `the dataset cache '/home/me/.cache/ssgan/datasets' (data.root and $SSGAN_DATA are not set)`."""
    root = str(dataset_root(cfg))
    if cfg.root is not None:
        return f"data.root {root!r}"
    if os.environ.get(DATA_ENV):
        return f"${DATA_ENV} {root!r}"
    return f"the dataset cache {root!r} (data.root and ${DATA_ENV} are not set)"


def download_failed(name: str, root: Path, e: Exception) -> DataError:
    """The one-line error of a failed download: into where, why (torchvision's message, whose lines name each
    mirror tried, joined into one), and how to go on."""
    why = " ".join(str(e).split())
    return DataError(f"could not download {name} into {str(root)!r} ({type(e).__name__}: {why}); check the "
                     f"connection, or point data.root (or ${DATA_ENV}) at the folder that holds the files and set "
                     "data.download=false")
