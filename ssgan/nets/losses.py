"""Losses as pure functions of logits and features (Salimans et al. 2016, "Improved Techniques for
Training GANs", sec. 3.1 and 5; Odena 2016, "Semi-Supervised Learning with GANs").

The discriminator is a K+1-class classifier. `real_logit` turns its logits into the logit of
"x is real", r(x) = log D(x) - log(1 - D(x)); every real/fake term is then a softplus of r, which is
exact and never overflows, even for logits of +-1000.
"""
from __future__ import annotations

from typing import Optional

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


def unsupervised_loss(
    logits_ulb: torch.Tensor,
    logits_fake: torch.Tensor,
    num_classes: int,
    target_ulb: Optional[torch.Tensor] = None,
    target_fake: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Real/fake loss of D: -E_x log D(x) - E_z log(1 - D(G(z))).

    -log D = softplus(-r) and -log(1 - D) = softplus(r). With soft or flipped "is real" targets
    t (one-sided label smoothing, label flipping) each term is the binary cross-entropy
    t * softplus(-r) + (1 - t) * softplus(r); the defaults t = 1 for x and t = 0 for G(z) give the
    plain loss above exactly.
    """
    return real_fake_loss(real_logit(logits_ulb, num_classes), real_logit(logits_fake, num_classes),
                          target_ulb, target_fake)


def real_fake_loss(r_real: torch.Tensor, r_fake: torch.Tensor, target_real: Optional[torch.Tensor] = None,
                   target_fake: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`unsupervised_loss` from the "is real" logits r (B,) of real and generated rows: the training
    step computes r for both at once, from one forward's logits (one logsumexp: fewer GPU kernels)."""
    real_term = F.softplus(-r_real) if target_real is None else _bce_with_logit(r_real, target_real)
    fake_term = F.softplus(r_fake) if target_fake is None else _bce_with_logit(r_fake, target_fake)
    return real_term.mean() + fake_term.mean()


def _bce_with_logit(r: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return target * F.softplus(-r) + (1.0 - target) * F.softplus(r)


def conditional_entropy(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean entropy of the K-class prediction, -sum_k p_k log p_k: minimizing it on unlabeled data
    moves D's class boundaries away from the data (Grandvalet & Bengio 2005; Dai et al. 2017, "Bad GAN")."""
    logp = F.log_softmax(logits[:, :num_classes], dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def feature_matching_loss(feat_real: torch.Tensor, feat_fake: torch.Tensor) -> torch.Tensor:
    """G's feature matching loss: || E f(x) - E f(G(z)) ||_2^2 over a batch (Salimans et al. sec. 3.1)."""
    return (feat_real.mean(dim=0) - feat_fake.mean(dim=0)).pow(2).sum()


def non_saturating_loss(logits_fake: torch.Tensor, num_classes: int) -> torch.Tensor:
    """G's non-saturating loss: -E_z log D(G(z)) = softplus(-r(G(z)))."""
    return F.softplus(-real_logit(logits_fake, num_classes)).mean()


# -- consistency methods: the same network, no generator (ssgan/training/consistency.py) ---------------------------

def kl_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over rows of KL(p || q) between the K-class predictions softmax(logits_p) and softmax(logits_q):
    VAT's local distributional smoothness (Miyato et al. 2018, eq. 4), p the fixed prediction on x."""
    logp = F.log_softmax(logits_p[:, :num_classes], dim=1)
    logq = F.log_softmax(logits_q[:, :num_classes], dim=1)
    return (logp.exp() * (logp - logq)).sum(dim=1).mean()


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over rows of the squared distance between two K-class predictions, || p_a - p_b ||^2: the
    Pi model's and the mean teacher's consistency cost (Laine & Aila 2017; Tarvainen & Valpola 2017)."""
    p_a = F.softmax(logits_a[:, :num_classes], dim=1)
    p_b = F.softmax(logits_b[:, :num_classes], dim=1)
    return (p_a - p_b).pow(2).sum(dim=1).mean()

