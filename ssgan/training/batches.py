"""Training batches by index, without a DataLoader in the hot loop.

Data that fit on the training device live there as tensors and a batch is one index into them: no
worker processes, no per-batch host-to-device copy. Data that do not fit (a large set on a GPU) stay
in host memory; each batch is gathered there, pinned and copied with `non_blocking=True`, so the copy
overlaps the previous step's work.
"""
from __future__ import annotations

from typing import Optional

import torch

RESIDENT_FRACTION = 0.25  # `auto`: keep the data on a GPU when they take at most this share of its free memory


class BatchSource:
    def __init__(self, x: torch.Tensor, y: torch.Tensor, device: torch.device, on_device: Optional[bool] = None):
        self.device = device
        self.resident = fits_on_device(x, device) if on_device is None else on_device
        self.x, self.y = (x.to(device), y.to(device)) if self.resident else (x, y)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def index_device(self) -> Optional[torch.device]:
        """Where batch indices are drawn: beside resident data (no copy per step), else on the host (None)."""
        return self.device if self.resident else None

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples and labels at `idx` (a CPU index tensor, or one on the device for resident data),
        on the training device."""
        return self._gather(self.x, idx), self._gather(self.y, idx)

    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        """Examples at `idx` without their labels (unlabeled batches: one gather, not two)."""
        return self._gather(self.x, idx)

    def _gather(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.resident:
            return t[idx.to(self.device)]
        out = t[idx]
        if self.device.type == "cuda":
            out = out.pin_memory()
        return out.to(self.device, non_blocking=True)


def fits_on_device(x: torch.Tensor, device: torch.device) -> bool:
    """CPU training always reads from memory; on a GPU the data must fit in a share of its free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return x.numel() * x.element_size() <= RESIDENT_FRACTION * free


class IndexStream:
    """Endless batches of indices into range(n): each pass is a fresh permutation, so every example
    is drawn once per pass; a batch larger than n spans several passes (small labeled sets).

    Permutations are drawn on the host from `gen`, so the batches are the same on every device and for
    every `chunk`. They move to `device` (if given) `chunk` or more indices at a time: on a GPU the
    steps then make no host-to-device copy (a copy from pageable memory would make the host wait for
    the GPU at every step). `state_dict` says where the stream is, so a resumed run draws on exactly."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator, device: Optional[torch.device] = None,
                 chunk: int = 0):
        self.n, self.batch_size, self.gen, self.device, self.chunk = n, batch_size, gen, device, chunk
        self.buf = torch.empty(0, dtype=torch.int64, device=device)  # drawn, not yet served

    def __iter__(self) -> "IndexStream":
        return self

    def __next__(self) -> torch.Tensor:
        if len(self.buf) < self.batch_size:
            self._draw()
        batch, self.buf = self.buf[: self.batch_size], self.buf[self.batch_size :]
        return batch

    def _draw(self) -> None:
        perms, have = [], len(self.buf)
        while have < max(self.batch_size, self.chunk):
            perms.append(torch.randperm(self.n, generator=self.gen))
            have += self.n
        fresh = torch.cat(perms)
        if self.device is not None and self.device.type == "cuda":
            fresh = fresh.pin_memory().to(self.device, non_blocking=True)
        elif self.device is not None:
            fresh = fresh.to(self.device)
        self.buf = torch.cat([self.buf, fresh]) if len(self.buf) else fresh

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state(), "buf": self.buf}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])
        self.buf = state["buf"].to(self.buf.device)


def index_streams(n_labeled: int, data: BatchSource, batch_size: int, seed: int) -> list[IndexStream]:
    """A run's three batch streams for training seed `seed`: labeled examples (generator `seed`: the same labeled
    batches in both modes), and two independent passes over the unlabeled pool for D's and G's batches
    (`seed + 1`, `seed + 2`), each seeing every example once per epoch. On a GPU the indices move 65,536 at a time."""
    device = data.index_device
    chunk = 1 << 16 if device is not None and device.type != "cpu" else 0
    return [IndexStream(n, batch_size, torch.Generator().manual_seed(seed + k), device, chunk)
            for k, n in enumerate((n_labeled, len(data), len(data)))]
