"""Per-step pieces of the stabilizing tricks that are not a network layer or a loss.

* one-sided label smoothing and label flipping: the "is real" targets D is trained on;
* the scale of D's Gaussian noise layers (on, off, or annealed to 0 over training);
* the optimizer (Adam or SGD with momentum) and the learning-rate factor (warm-up x decay).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn

from ssgan.config import TrainConfig, TricksConfig
from ssgan.nets.models import GaussianNoise


def real_fake_targets(
    n_real: int, n_fake: int, tricks: TricksConfig, device: torch.device, generator: Optional[torch.Generator] = None
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """D's "is real" targets for a batch of real and of generated samples, or (None, None) for the
    plain targets 1 and 0.

    One-sided label smoothing (Salimans et al. 2016, sec. 3.4): real targets ~ U(low, high), fake
    targets stay 0. Label flipping: a `flip_fraction` of all targets, drawn at random, is swapped —
    a real target becomes 0, a fake one 1.
    """
    if not (tricks.label_smoothing or tricks.label_flip):
        return None, None
    t_real = torch.ones(n_real, device=device)
    if tricks.label_smoothing:
        low, high = tricks.smoothing_range
        t_real = low + (high - low) * torch.rand(n_real, device=device, generator=generator)
    t_fake = torch.zeros(n_fake, device=device)
    if tricks.label_flip:
        flip = torch.rand(n_real + n_fake, device=device, generator=generator) < tricks.flip_fraction
        t_real = torch.where(flip[:n_real], torch.zeros_like(t_real), t_real)
        t_fake = torch.where(flip[n_real:], torch.ones_like(t_fake), t_fake)
    return t_real, t_fake


def set_noise_scale(model: nn.Module, scale: float) -> None:
    """Multiply the std of every GaussianNoise layer of `model` by `scale` (1 = as configured, 0 = off)."""
    for m in model.modules():
        if isinstance(m, GaussianNoise):
            m.scale = scale


def noise_scale(tricks: TricksConfig, step: int, total_steps: int, on: Optional[bool] = None) -> float:
    """The scale of D's Gaussian noise at `step`: 0 when off (`on`, default tricks.gaussian_noise), else 1 or
    annealed (tricks.noise_anneal)."""
    if not (tricks.gaussian_noise if on is None else on):
        return 0.0
    if tricks.noise_anneal:
        return max(0.0, 1.0 - step / max(total_steps, 1))
    return 1.0


def make_optimizer(params: Iterable[nn.Parameter], lr: float, train: TrainConfig, tricks: TricksConfig,
                   capturable: bool = False, betas: Optional[Sequence[float]] = None):
    """Adam (fused: one kernel for the whole update, on CPU and CUDA alike) or SGD with momentum.
    `betas`: Adam's, when not train.beta1 and train.beta2 (G's: tricks.betas_g).
    `capturable`: Adam keeps its step count and learning rate on the device, so that a CUDA graph can
    replay its update (ssgan/training/graphs.py); the learning rate is then a tensor that `set_lr` fills."""
    if tricks.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=tricks.momentum)
    b1, b2 = betas if betas is not None else (train.beta1, train.beta2)
    if capturable:
        params = list(params)
        lr_t = torch.tensor(lr, dtype=torch.float32, device=params[0].device)
        return torch.optim.Adam(params, lr=lr_t, betas=(b1, b2), eps=train.adam_eps, fused=True, capturable=True)
    return torch.optim.Adam(params, lr=lr, betas=(b1, b2), eps=train.adam_eps, fused=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: in place when it is a device tensor (a captured Adam reads it there)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def lr_factor(train: TrainConfig, tricks: TricksConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total_steps`: warm-up x decay."""
    warmup = min(1.0, (step + 1) / tricks.warmup_steps) if tricks.warmup_steps else 1.0
    progress = step / max(total_steps, 1)
    if train.lr_schedule == "linear_decay":  # Salimans et al.: constant, then linearly to 0
        if progress < train.decay_start:
            decay = 1.0
        else:
            decay = max(0.0, (1.0 - progress) / max(1.0 - train.decay_start, 1e-12))
    elif train.lr_schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif train.lr_schedule == "step":
        decay = train.step_gamma ** math.floor(progress / train.decay_start) if train.decay_start > 0 else 1.0
    else:
        decay = 1.0
    return warmup * decay


class Schedule:
    """The learning rate of step s is base_lr * factor(s) for every optimizer (what LambdaLR computes),
    set in place, and only when it changes (a captured Adam reads it from the device). `ramp`: a device
    scalar set to ramp_factor(s) the same way (a consistency mode's weight ramp-up, read by the step)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], factor: Callable[[int], float],
                 ramp: Optional[torch.Tensor] = None, ramp_factor: Callable[[int], float] = lambda s: 1.0):
        self.optimizers, self.factor, self.steps = optimizers, factor, 0
        self.ramp, self.ramp_factor = ramp, ramp_factor
        self.base = [float(o.param_groups[0]["lr"]) for o in optimizers]
        self.last: Optional[float] = None
        self.last_ramp: Optional[float] = None
        self._apply()

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def _apply(self) -> None:
        f = self.factor(self.steps)
        if f != self.last:
            for o, base in zip(self.optimizers, self.base):
                set_lr(o, base * f)
            self.last = f
        if self.ramp is not None and (r := self.ramp_factor(self.steps)) != self.last_ramp:
            self.ramp.fill_(r)
            self.last_ramp = r


def sigmoid_rampup(step: int, rampup_steps: int) -> float:
    """exp(-5 (1 - t)^2) for t = step / rampup_steps, then 1: the consistency weight's ramp-up
    (Laine & Aila 2017, sec. 3.1; Tarvainen & Valpola 2017). No ramp-up (0 steps): 1."""
    if rampup_steps <= 0 or step >= rampup_steps:
        return 1.0
    t = max(step, 0) / rampup_steps
    return math.exp(-5.0 * (1.0 - t) ** 2)
