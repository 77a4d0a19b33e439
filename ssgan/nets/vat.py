"""Virtual adversarial training's perturbation (Miyato et al. 2018, "Virtual Adversarial Training: A
Regularization Method for Supervised and Semi-Supervised Learning", sec. 3.3).

r_adv is the direction in which the model's prediction on x changes most, KL(p(x) || p(x + r)) for a small
||r||: the dominant eigenvector of that divergence's Hessian at r = 0, found by power iteration with finite
differences: d <- normalize(grad_r KL(p(x) || p(x + xi d))). One iteration suffices in practice (their
experiments); the perturbation is eps * d.
"""
from __future__ import annotations

from typing import Callable

import torch

from ssgan.nets.losses import kl_divergence


def unit_rows(d: torch.Tensor) -> torch.Tensor:
    """Each row (example) of `d` scaled to unit L2 norm over all its other dimensions."""
    norms = d.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d / norms.view(-1, *([1] * (d.dim() - 1)))


def adversarial_direction(logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                          logits: torch.Tensor, num_classes: int, xi: float, iterations: int = 1) -> torch.Tensor:
    """The unit direction (per row of x) that most changes the prediction `logits` (B, K) = logits_of(x),
    held fixed: `iterations` power iterations from a random direction, each by finite differences of size xi.
    Only the direction gets a gradient here: the model's parameters are left alone."""
    p = logits.detach()
    d = unit_rows(torch.randn_like(x))
    for _ in range(iterations):
        d = (xi * d).requires_grad_()
        divergence = kl_divergence(p, logits_of(x + d), num_classes)
        d = unit_rows(torch.autograd.grad(divergence, d)[0].detach())
    return d
