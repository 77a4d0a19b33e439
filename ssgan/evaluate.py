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
