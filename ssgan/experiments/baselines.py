"""The scikit-learn semi-supervised baselines a comparison measures ssgan against.

Each is fitted on the training inputs flattened to (N, D) with -1 marking every row outside the labeled
subset (scikit-learn's convention: "unlabeled samples should have the label -1"), so it sees the same
labeled examples and the same unlabeled pool as ssgan, and is scored on the same test set by the same
`ssgan.evaluation.metrics.score` as the networks.

- label_spreading: `LabelSpreading` on a kNN graph (Zhou et al. 2004, *Learning with local and global
  consistency*), scikit-learn's defaults: 7 neighbours, alpha 0.2, 30 iterations.
- self_training: `SelfTrainingClassifier` around a logistic regression (Yarowsky 1995): predictions with
  probability >= 0.75 become labels, for at most 10 rounds.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Any, Callable, Optional

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

from ssgan.config import Config, flatten
from ssgan.data.splits import UNLABELED, Split, load_split
from ssgan.evaluation.metrics import Evaluation, score
from ssgan.tracking.logger import log_evaluation, split_tags
from ssgan.tracking.store import use_store

log = logging.getLogger("ssgan")

BASELINES: dict[str, Callable[[], Any]] = {
    "label_spreading": lambda: LabelSpreading(kernel="knn", n_neighbors=7),
    "self_training": lambda: SelfTrainingClassifier(LogisticRegression(max_iter=1000)),
}


def semi_supervised_targets(split: Split) -> np.ndarray:
    """(N,) the labels of the labeled subset, UNLABELED (-1) on every other training row."""
    y = np.full(len(split.y_train), UNLABELED, dtype=np.int64)
    idx = split.labeled_idx.numpy()
    y[idx] = split.y_train.numpy()[idx]
    return y


def fit_and_score(estimator: Any, split: Split) -> Evaluation:
    """Fit a scikit-learn semi-supervised estimator on the split's training rows (-1 = unlabeled) and score
    its predictions on the test set."""
    x_test = split.x_test.flatten(1).numpy()  # (M, D)
    with warnings.catch_warnings():
        # LabelSpreading divides by zero for points whose kNN component holds no label; counted below
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        estimator.fit(split.x_train.flatten(1).numpy(), semi_supervised_targets(split))  # (N, D), (N,)
        y_pred = estimator.predict(x_test)  # (M,)
        if isinstance(estimator, LabelSpreading):
            unreached = int(np.isnan(estimator.predict_proba(x_test)).any(axis=1).sum())
            if unreached:
                log.warning("label_spreading: %d of %d test points have no labeled example in their kNN graph "
                            "component; scikit-learn predicts class %s for them", unreached, len(x_test),
                            estimator.classes_[0])
    return score(split.y_test.numpy(), y_pred, split.class_names)


def run_baseline(method: str, cfg: Config, run_id: Optional[str] = None, nested: bool = True) -> dict[str, Any]:
    """Fit `method` on the split `cfg.data` draws, recorded in an MLflow run (`run_id`: an existing one)
    with the same tags and test metrics as a network's run; returns its summary."""
    import mlflow

    split = load_split(cfg.data)
    experiment_id = use_store(cfg)
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=cfg.tracking.run_name,
                          nested=nested) as run:
        mlflow.set_tags(split_tags(cfg, split.split_hash, len(split.labeled_idx)))
        estimator = BASELINES[method]()
        params = {f"sklearn.{k}": v for k, v in estimator.get_params().items() if not hasattr(v, "get_params")}
        mlflow.log_params({**{k: str(v) for k, v in flatten(cfg).items() if k.startswith("data.")}, **params})
        start = time.perf_counter()
        ev = fit_and_score(estimator, split)
        seconds = time.perf_counter() - start
        log_evaluation(ev, step=0, x_test=split.x_test, y_test=split.y_test, scale=cfg.data.scale)
        mlflow.log_metric("n_iter", estimator.n_iter_)
        # why fitting stopped, as scikit-learn reports it (self-training) or as the iteration count implies
        stop = getattr(estimator, "termination_condition_", None) or (
            "max_iter" if estimator.n_iter_ >= estimator.max_iter else "converged")
        mlflow.set_tags({"stop_reason": "completed", "termination_condition": stop})
    return {"run_id": run.info.run_id, "method": method, "labels": len(split.labeled_idx),
            "split_hash": split.split_hash, "stop_reason": "completed", "stop_message": "",
            "wall_clock_seconds": round(seconds, 3), **ev.metrics()}
