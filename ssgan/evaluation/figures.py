"""Pictures a person looks at: confusion matrices, the test images behind the largest confusions, and grids
of images (generated samples included)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from sklearn.metrics import ConfusionMatrixDisplay
from torch import nn

from ssgan.evaluation.metrics import Evaluation


@torch.no_grad()
def sample_grid(generator: nn.Module, z: torch.Tensor, classes: Optional[torch.Tensor], scale: str,
                nrow: int) -> Optional[np.ndarray]:
    """A (H, W, 3) uint8 grid of G(z[, classes]) in eval mode; None when the samples are not images."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    x = generator(z.to(device), None if classes is None else classes.to(device)).float().cpu()
    generator.train(was_training)
    return image_grid(x, scale, nrow)


def image_grid(x: torch.Tensor, scale: str, nrow: int) -> Optional[np.ndarray]:
    """A (H, W, 3) uint8 grid of images x (B, C, H, W) in the generator's range; None when x are not images."""
    from torchvision.utils import make_grid

    if x.dim() != 4:  # (B, C, H, W) images only
        return None
    zoom = -(-32 // x.shape[-1])  # small images (digits are 8x8) are enlarged to >= 32 px, nearest
    x = x.float().cpu().repeat_interleave(zoom, dim=-1).repeat_interleave(zoom, dim=-2)
    lo = -1.0 if scale == "tanh" else 0.0
    grid = make_grid(x, nrow=nrow, normalize=True, value_range=(lo, 1.0), pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str], title: str):
    """A matplotlib figure of a confusion matrix (counts; rows = true class, columns = predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.5 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(confusion), display_labels=list(class_names)).plot(ax=ax, colorbar=False, cmap="Blues")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def confused_examples_figure(ev: Evaluation, x: torch.Tensor, y_true: torch.Tensor, scale: str, pairs: int = 4,
                             per_pair: int = 12):
    """The test images behind the largest confusions: one row per (true, predicted) pair, up to `per_pair`
    of its images. A run stuck a point or two below its peers is often one style of one class given to
    another (e.g. a kind of 7 read as 2), which this shows at a glance. None for non-image inputs or
    when every test example is right."""
    top = ev.confused_pairs(pairs)
    if x.dim() != 4 or not top:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y_true = np.asarray(y_true.cpu())
    fig, axes = plt.subplots(len(top), 1, figsize=(1.0 * per_pair, 1.4 * len(top)), squeeze=False)
    for ax, (i, j, count) in zip(axes[:, 0], top):
        rows = np.flatnonzero((y_true == i) & (ev.predicted == j))[:per_pair]
        ax.imshow(image_grid(x[torch.as_tensor(rows)], scale, nrow=per_pair))
        examples = f"{count} test example{'s' * (count > 1)}"
        ax.set_title(f"true {ev.class_names[i]} -> predicted {ev.class_names[j]}: {examples}", fontsize=9, loc="left")
        ax.axis("off")
    fig.tight_layout()
    return fig
