"""Image folders: ROOT/<class>/*.png|jpg are labeled, ROOT/<data.unlabeled_dir>/* are not.

torchvision does the work: `ImageFolder` finds the classes and files (the unlabeled folder is not a
class), `decode_image` reads PNG/JPEG/... as uint8 in the configured color mode, and `resize` brings
every image to `data.image_size` (null = the first image's size). A file that cannot be decoded is
skipped and counted (one warning line); if every file is unreadable, or a class has no images, that is
an error naming the folder.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ssgan.errors import DataError

log = logging.getLogger("ssgan")


def load_image_folder(root: Path, unlabeled_dir: Optional[str], image_size: Optional[Sequence[int]], color: str
                      ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(N, C, H, W) float32 pixels in [0, 255], labels (-1 = unlabeled), class names."""
    from torchvision.datasets import ImageFolder

    if not root.is_dir():
        raise DataError(f"image folder {str(root)!r} does not exist; set data.root to a folder of <class>/ subfolders")

    class _Folder(ImageFolder):  # the unlabeled folder is not a class
        def find_classes(self, directory):
            classes = sorted(e.name for e in Path(directory).iterdir() if e.is_dir() and e.name != unlabeled_dir)
            if not classes:
                raise DataError(f"image folder {str(root)!r} has no class subfolders (ROOT/<class>/*.png)")
            return classes, {c: i for i, c in enumerate(classes)}

    try:
        folder = _Folder(str(root), loader=lambda p: p, allow_empty=True)
    except FileNotFoundError as e:
        raise DataError(f"image folder {str(root)!r}: {e}") from None
    counts = np.bincount([t for _, t in folder.samples], minlength=len(folder.classes))
    empty = [c for c, n in zip(folder.classes, counts) if n == 0]
    if empty:
        raise DataError(f"image folder {str(root)!r}: class folder(s) {', '.join(map(repr, empty))} hold no images "
                        "(.png, .jpg, ...); add images or remove the folder")
    files = [(Path(p), t) for p, t in folder.samples]
    if unlabeled_dir and (root / unlabeled_dir).is_dir():
        files += [(p, -1) for p in list_images(root / unlabeled_dir)]
    x, keep = decode_images([p for p, _ in files], image_size, color, where=str(root))
    y = np.asarray([t for (_, t), ok in zip(files, keep) if ok], dtype=np.int64)
    return x, y, tuple(folder.classes)


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively), sorted, by torchvision's list of image extensions."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def decode_images(paths: Sequence[Path], image_size: Optional[Sequence[int]], color: str, where: str
                  ) -> tuple[np.ndarray, list[bool]]:
    """Decode and resize every readable file; returns the stacked images and which paths were kept."""
    import torch
    from torchvision.io import ImageReadMode, decode_image
    from tqdm.auto import tqdm
    from torchvision.transforms.v2.functional import resize

    if not paths:
        raise DataError(f"{where!r} holds no images (.png, .jpg, ...)")
    mode = ImageReadMode.GRAY if color == "gray" else ImageReadMode.RGB
    size = list(image_size) if image_size else None
    images, keep, bad = [], [], []
    for p in tqdm(paths, desc="reading images", unit="img", leave=False, disable=None):  # bar on a TTY only
        try:
            img = decode_image(str(p), mode=mode)
        except (RuntimeError, ValueError, OSError):
            keep.append(False)
            bad.append(p)
            continue
        if size is None:
            size = list(img.shape[1:])
        if list(img.shape[1:]) != size:
            img = resize(img, size, antialias=True)
        images.append(img)
        keep.append(True)
    if not images:
        raise DataError(f"{where!r}: none of its {len(paths)} image file(s) could be read (first: {str(bad[0])!r})")
    if bad:
        log.warning("skipped %d unreadable image file(s) under %s (first: %s)", len(bad), where, bad[0])
    return torch.stack(images).numpy().astype(np.float32), keep
