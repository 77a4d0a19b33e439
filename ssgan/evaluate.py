"""Test-set metrics, all from scikit-learn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
)
from torch import nn

from ssgan.train import predict_proba


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    confusion: np.ndarray  # (K, K), rows = true class, columns = predicted class
    report: dict  # sklearn's classification_report(output_dict=True)
    report_text: str
    class_names: tuple[str, ...]
    predicted: np.ndarray  # (N,) predicted class index of each test example

    def confused_pairs(self, top: int = 4) -> list[tuple[int, int, int]]:
        """The `top` largest off-diagonal cells, (true class, predicted class, count), largest first."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = np.argsort(-off, axis=None, kind="stable")[:top]
        cells = [(int(i), int(j)) for i, j in zip(*np.unravel_index(order, off.shape))]
        return [(i, j, int(off[i, j])) for i, j in cells if off[i, j] > 0]

    def metrics(self) -> dict[str, float]:
        return {"test_accuracy": self.accuracy, "test_balanced_accuracy": self.balanced_accuracy,
                "test_macro_f1": self.macro_f1}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, class_names: tuple[str, ...]) -> Evaluation:
    y_pred = predict_proba(model, x, len(class_names)).argmax(1).numpy()
    return score(y.cpu().numpy(), y_pred, class_names)


def score(y_true: np.ndarray, y_pred: np.ndarray, class_names: tuple[str, ...]) -> Evaluation:
    """The metrics of predicted class indices; every method (network or scikit-learn) is scored here."""
    labels = list(range(len(class_names)))
    kw = dict(labels=labels, target_names=list(class_names), zero_division=0)
    return Evaluation(
        accuracy=float(accuracy_score(y_true, y_pred)),
        balanced_accuracy=float(balanced_accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        report=classification_report(y_true, y_pred, output_dict=True, **kw),
        report_text=classification_report(y_true, y_pred, digits=4, **kw),
        class_names=class_names,
        predicted=np.asarray(y_pred),
    )


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
    from ssgan.samples import image_grid

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
