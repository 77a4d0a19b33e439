"""Losses as pure functions of logits and features (Salimans et al. 2016, "Improved Techniques for
Training GANs", sec. 3.1 and 5; Odena 2016, "Semi-Supervised Learning with GANs").

The discriminator is a K+1-class classifier. `real_logit` turns its logits into the logit of
"x is real", r(x) = log D(x) - log(1 - D(x)); every real/fake term is then a softplus of r, which is
exact and never overflows, even for logits of +-1000.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def real_logit(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """r(x) for logits (B, K) with the fake logit fixed at 0, or (B, K+1) with an explicit one.

    With the fake logit l_fake: D(x) = sum_k exp(l_k) / (sum_k exp(l_k) + exp(l_fake)), so
    r(x) = logsumexp_k(l_k) - l_fake.  # (B,)
    """
    lse_real = torch.logsumexp(logits[:, :num_classes], dim=1)
    if logits.shape[1] == num_classes:
        return lse_real
    return lse_real - logits[:, num_classes]


def supervised_loss(logits_lb: torch.Tensor, y_lb: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cross-entropy of the K real classes: -log p(y | x, y < K+1)."""
    return F.cross_entropy(logits_lb[:, :num_classes], y_lb)


def unsupervised_loss(logits_ulb: torch.Tensor, logits_fake: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Real/fake loss of D: -E_x log D(x) - E_z log(1 - D(G(z))).

    -log D = softplus(-r) and -log(1 - D) = softplus(r).
    """
    r_real, r_fake = real_logit(logits_ulb, num_classes), real_logit(logits_fake, num_classes)
    return F.softplus(-r_real).mean() + F.softplus(r_fake).mean()


def feature_matching_loss(feat_real: torch.Tensor, feat_fake: torch.Tensor) -> torch.Tensor:
    """G's feature matching loss: || E f(x) - E f(G(z)) ||_2^2 over a batch (Salimans et al. sec. 3.1)."""
    return (feat_real.mean(dim=0) - feat_fake.mean(dim=0)).pow(2).sum()


def non_saturating_loss(logits_fake: torch.Tensor, num_classes: int) -> torch.Tensor:
    """G's non-saturating loss: -E_z log D(G(z)) = softplus(-r(G(z)))."""
    return F.softplus(-real_logit(logits_fake, num_classes)).mean()
