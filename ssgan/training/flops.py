"""FLOPs of one training step, and the device's own matmul peak to compare them with.

Counted: the matrix multiplications and convolutions of the forward and backward passes of D and G
in one `train_step` (torch.utils.flop_counter counts exactly the ops that run). Per dense layer with
B rows, `n_in` inputs and `n_out` outputs:

    forward                 2 * B * n_in * n_out
    backward, weight grad   2 * B * n_in * n_out   (when the layer's weights are being trained)
    backward, input grad    2 * B * n_in * n_out   (when something before the layer needs a gradient)

and the same with n_in * n_out replaced by C_in * k_h * k_w * C_out * H_out * W_out for a convolution.
Elementwise work (activations, noise, normalization, the optimizer) is not counted: it is memory-bound
and small next to the matmuls, so FLOPs / second over the matmul peak measures how close the step is to
the hardware's limit.
"""
from __future__ import annotations

import copy
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from ssgan.config import Config


def step_flops(nets, cfg: Config, x_lb: torch.Tensor, y_lb: torch.Tensor, x_ulb=None, x_ulb2=None) -> int:
    """Matmul/conv FLOPs of one `train_step` on these batches (run on a copy: `nets` is unchanged)."""
    from ssgan.training.step import train_step

    nets = copy.deepcopy(nets)
    with FlopCounterMode(display=False) as counter:
        train_step(nets, cfg, x_lb, y_lb, x_ulb, x_ulb2)
    return counter.get_total_flops()


def matmul_peak(device: torch.device, n: int = 2048, dtype: torch.dtype = torch.float32, seconds: float = 2.0) -> float:
    """FLOP/s of a large dense (n x n) @ (n x n) matmul on `device`, best of repeated timings."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    best, deadline = float("inf"), time.perf_counter() + seconds
    torch.mm(a, b, out=out)  # warm-up
    while time.perf_counter() < deadline:
        _sync(device)
        t = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b, out=out)
        _sync(device)
        best = min(best, (time.perf_counter() - t) / 4)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
