"""Inference with a trained classifier: class probabilities, and an ensemble's averaged probabilities.

Imports no training code, so loading a served model (ssgan/serving) does not pull in the training loop.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, num_classes: int, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, K) over the K real classes, in eval mode, batched."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs = [
        torch.softmax(model(x[i : i + batch_size].to(device))[0][:, :num_classes], dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    return torch.cat(probs)


class Ensemble(nn.Module):
    """K discriminators as one classifier: forward(x) = (log of the members' mean probability over the K
    real classes, member 0's features). softmax of that output is the mean probability itself, so
    everything that scores, saves, serves or predicts with one discriminator does the same with an ensemble."""

    def __init__(self, members: list[nn.Module], num_classes: int):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [m(x) for m in self.members]
        probs = torch.stack([torch.softmax(logits[:, : self.num_classes], dim=1) for logits, _ in outputs]).mean(0)
        return probs.clamp_min(1e-30).log(), outputs[0][1]  # (N, K), (N, F)
