"""How raw inputs become network inputs, fitted on training data only and saved with the model.

* `Standardize` (tables): z = (x - mean) / std per feature, with the training set's mean and std, then
  clipped to +-`clip` standard deviations and mapped onto the generator's range ([-1, 1] for tanh,
  [0, 1] for sigmoid), so that real rows and generated rows live in the same box.
* `MinMax` (images, and arrays of known range): [lo, hi] -> the generator's range, one lo/hi for the
  whole array (images) or one per feature.

Both are plain data (`to_dict` / `from_dict`) so a logged model carries them as JSON and `ssgan predict`
applies exactly the training-time transform.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union

import numpy as np
import torch


@dataclass(frozen=True)
class Standardize:
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: str = "tanh"  # tanh -> [-1, 1], sigmoid -> [0, 1]
    clip: float = 3.0

    @classmethod
    def fit(cls, x: np.ndarray, scale: str = "tanh", clip: float = 3.0) -> "Standardize":
        """Statistics of the (N, F) training rows; a constant feature gets std 1 (it maps to the middle)."""
        mean, std = x.mean(axis=0), x.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std), scale, clip)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        mean, std = np.asarray(self.mean), np.asarray(self.std)

        def scaled(rows: np.ndarray) -> np.ndarray:  # float64 arithmetic, a block of rows at a time
            unit = np.clip((np.asarray(rows, dtype=np.float64) - mean) / std, -self.clip, self.clip) / self.clip
            return unit if self.scale == "tanh" else (unit + 1.0) / 2.0

        return by_rows(x, scaled)

    def inverse(self, x: torch.Tensor) -> np.ndarray:
        """Raw values of network inputs (exact where nothing was clipped)."""
        unit = x.numpy().astype(np.float64)
        unit = unit if self.scale == "tanh" else unit * 2.0 - 1.0
        return unit * self.clip * np.asarray(self.std) + np.asarray(self.mean)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "standardize", **asdict(self)}


@dataclass(frozen=True)
class MinMax:
    lo: Union[float, tuple[float, ...]]
    hi: Union[float, tuple[float, ...]]
    scale: str = "tanh"

    @classmethod
    def fit(cls, x: np.ndarray, scale: str = "tanh", per_feature: bool = False) -> "MinMax":
        if per_feature:
            return cls(tuple(float(v) for v in x.min(axis=0)), tuple(float(v) for v in x.max(axis=0)), scale)
        return cls(float(x.min()), float(x.max()), scale)

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        lo, hi = np.asarray(self.lo, dtype=np.float32), np.asarray(self.hi, dtype=np.float32)
        span = np.where(hi - lo > 0, hi - lo, np.float32(1.0))  # float32 throughout: no float64 copy of a dataset

        def scaled(rows: np.ndarray) -> np.ndarray:
            unit = np.clip((np.asarray(rows, dtype=np.float32) - lo) / span, 0.0, 1.0)
            return unit * 2.0 - 1.0 if self.scale == "tanh" else unit

        return by_rows(x, scaled)

    def inverse(self, x: torch.Tensor) -> np.ndarray:
        unit = x.numpy().astype(np.float64)
        unit = (unit + 1.0) / 2.0 if self.scale == "tanh" else unit
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        return lo + unit * (hi - lo)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "minmax", **asdict(self)}


Preprocessor = Union[Standardize, MinMax]


def by_rows(x: np.ndarray, scaled: Callable[[np.ndarray], np.ndarray], rows: int = 1 << 13) -> torch.Tensor:
    """`scaled(x)` as one float32 tensor, computed a block of rows at a time: the temporaries of the arithmetic
    are the size of a block, not of the dataset, so the peak stays near the input plus the output."""
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=np.float32)
    for i in range(0, len(x), rows):
        out[i : i + rows] = scaled(x[i : i + rows])
    return torch.from_numpy(out)


def fit_for(x: np.ndarray, scale: str, pixel_range: Optional[tuple[float, float]] = None) -> Preprocessor:
    """The transform for training inputs `x`: `Standardize` for tables (N, F); `MinMax` for images, over
    `pixel_range` when the format fixes it (e.g. 0..255), else over the range of `x`."""
    if x.ndim == 2:
        return Standardize.fit(x, scale)
    return MinMax(*pixel_range, scale) if pixel_range is not None else MinMax.fit(x, scale)


def from_dict(d: dict[str, Any]) -> Preprocessor:
    d = dict(d)
    kind = d.pop("kind")
    if kind == "standardize":
        return Standardize(tuple(d["mean"]), tuple(d["std"]), d["scale"], d["clip"])
    if kind == "minmax":
        lo, hi = d["lo"], d["hi"]
        return MinMax(tuple(lo) if isinstance(lo, list) else lo, tuple(hi) if isinstance(hi, list) else hi, d["scale"])
    raise ValueError(f"unknown preprocessor kind {kind!r}")
