"""MLflow tracking: where runs go and what each run records.

Store: `tracking.uri`, else $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory
with artifacts in `mlartifacts/` beside the database file.
"""
from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ssgan.config import Config, flatten, to_dict
from ssgan.errors import SSGANError

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_uri(configured: Optional[str]) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def artifact_root_for(uri: str) -> Optional[str]:
    """`sqlite:///path/mlflow.db` -> `file:///abs/path/mlartifacts`; None for stores that pick their own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):]).resolve()
    return (db.parent / "mlartifacts").as_uri()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SSGANError(f"MLflow tracking server {uri} cannot be reached ({reason}); start it or fix tracking.uri") from None


def use_store(cfg: Config) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id."""
    import mlflow

    uri = resolve_uri(cfg.tracking.uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
        if experiment is not None:
            return experiment.experiment_id
        return mlflow.create_experiment(cfg.tracking.experiment, artifact_location=artifact_root_for(uri))
    except mlflow.exceptions.MlflowException as e:
        raise SSGANError(f"MLflow store {uri}: {str(e).splitlines()[0]}") from None


class RunLogger:
    """Everything one training run records in MLflow. Use inside an active `mlflow.start_run()`."""

    def __init__(self, cfg: Config, split_hash: str, num_labels: int, log_config: bool = True):
        """`log_config=False`: a resumed run, whose params are recorded already (MLflow keeps a param's
        first value; tracking settings may differ on resume)."""
        import mlflow

        self.mlflow, self.cfg = mlflow, cfg
        if log_config:
            mlflow.log_params({k: _param(v) for k, v in flatten(cfg).items()})
            mlflow.set_tags({"mode": cfg.mode, **split_tags(cfg, split_hash, num_labels)})
            mlflow.log_dict(to_dict(cfg), "config.yaml")
        self._fixed_z: Optional[torch.Tensor] = None

    def log_epoch(self, epoch: int, metrics: dict[str, float], generator: Optional[torch.nn.Module]) -> None:
        self.mlflow.log_metrics(metrics, step=epoch)
        every = self.cfg.tracking.sample_every
        if generator is not None and every and (epoch % every == 0 or epoch == self.cfg.train.epochs):
            grid = self.sample_grid(generator)
            if grid is not None:
                self.mlflow.log_image(grid, key="samples", step=epoch)

    def sample_grid(self, generator: torch.nn.Module, n: int = 100) -> Optional[np.ndarray]:
        """Grid of samples from a fixed noise batch (one row per class for a conditional G)."""
        from ssgan.samples import sample_grid

        rows = int(np.sqrt(n))
        if self._fixed_z is None:
            self._fixed_z = torch.rand(n, generator.noise_dim, generator=torch.Generator().manual_seed(0))
        classes = None
        if generator.condition.dim:
            classes = (torch.arange(n) // rows) % generator.condition.num_classes
        return sample_grid(generator, self._fixed_z, classes, self.cfg.data.scale, nrow=rows)

    def log_checkpoint(self, state: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "checkpoint.pt"
            torch.save(state, path)
            self.mlflow.log_artifact(str(path))

    def finish(self, summary: dict[str, Any], stop_reason: str) -> None:
        self.mlflow.set_tag("stop_reason", stop_reason)
        self.mlflow.log_text(json.dumps(summary, indent=2), "summary.json")


def split_tags(cfg: Config, split_hash: str, num_labels: int) -> dict[str, str]:
    """The tags that say which data and which labeled examples a run saw (every method sets them)."""
    return {"dataset": cfg.data.name, "labels": str(num_labels), "split_seed": str(cfg.data.split_seed),
            "split_hash": split_hash}


def log_evaluation(ev, step: int, x_test: Optional[torch.Tensor] = None, y_test: Optional[torch.Tensor] = None,
                   scale: str = "tanh") -> None:
    """Final test metrics at the last epoch's step, so they are the run's latest values in MLflow;
    the confusion matrix (PNG and JSON), the classification report and, for images given `x_test` and
    `y_test`, the test images behind the largest confusions. Inside an active run."""
    import matplotlib.pyplot as plt
    import mlflow

    from ssgan.evaluate import confused_examples_figure, confusion_figure

    mlflow.log_metrics(ev.metrics(), step=step)
    fig = confusion_figure(ev.confusion, ev.class_names, f"test accuracy {ev.accuracy:.4f}")
    mlflow.log_figure(fig, "confusion_matrix.png")
    plt.close(fig)
    fig = confused_examples_figure(ev, x_test, y_test, scale) if x_test is not None else None
    if fig is not None:
        mlflow.log_figure(fig, "confused_examples.png")
        plt.close(fig)
    mlflow.log_dict(ev.report, "classification_report.json")
    mlflow.log_text(ev.report_text, "classification_report.txt")
    mlflow.log_dict({"labels": list(ev.class_names), "matrix": ev.confusion.tolist()}, "confusion_matrix.json")


def _param(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
