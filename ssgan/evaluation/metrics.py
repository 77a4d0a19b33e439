"""Test-set metrics, all from scikit-learn."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
)
from torch import nn

from ssgan.nets.inference import predict_proba


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


def evaluate_ensemble(classifiers: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                      class_names: tuple[str, ...]) -> tuple[Evaluation, list[Evaluation]]:
    """The evaluation of the members' mean class probability, and each member's."""
    k = len(class_names)
    probs = [predict_proba(c, x, k) for c in classifiers]
    y_true = y.cpu().numpy()
    members = [score(y_true, p.argmax(1).numpy(), class_names) for p in probs]
    return score(y_true, torch.stack(probs).mean(0).argmax(1).numpy(), class_names), members
