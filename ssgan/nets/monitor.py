"""Mode-collapse monitor: how varied are the generator's samples, seen through D's eyes?

* `gen_diversity`: mean pairwise distance of D's features over a fixed batch of generated samples,
  divided by the same measure on a fixed batch of real data (1 = as varied as the data, 0 = one point);
* `gen_classes`: how many of the K classes the classifier assigns to those generated samples.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def collapse_metrics(D: nn.Module, x_fake: torch.Tensor, x_real: torch.Tensor, num_classes: int) -> dict[str, float]:
    was_training = D.training
    D.eval()
    logits_fake, feat_fake = D(x_fake)
    _, feat_real = D(x_real)
    D.train(was_training)
    spread_real = torch.pdist(feat_real.flatten(1).float()).mean()
    spread_fake = torch.pdist(feat_fake.flatten(1).float()).mean()
    return {
        "gen_diversity": float(spread_fake / spread_real.clamp_min(1e-12)),
        "gen_classes": float(logits_fake[:, :num_classes].argmax(1).unique().numel()),
    }
