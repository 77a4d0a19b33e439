"""Exponential moving averages of D's weights: the evaluated classifier, and `train.ema_compare`'s diagnostics."""
from __future__ import annotations

import copy

import torch
from torch import nn


def ema_metric(decay: float) -> str:
    """The metric name of the test accuracy of a `train.ema_compare` average, e.g. test_accuracy_ema0.9999."""
    return f"test_accuracy_ema{decay:g}"


class EMA:
    """Exponential moving average of a model's weights, with the usual warm-up: the decay used at
    update t is min(decay, (1 + t) / (10 + t)), so early averages are not dominated by the random init."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - self.rate())
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def rate(self) -> float:
        """The decay used at the current update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))
