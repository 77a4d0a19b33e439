"""What a training run records in MLflow: params and config, per-epoch metrics and sample grids, the
checkpoint, the test evaluation (metrics, confusion matrix, classification report) and summary.json."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ssgan.config import Config, flatten, to_dict
from ssgan.evaluation.figures import confused_examples_figure, confusion_figure, sample_grid
from ssgan.evaluation.metrics import Evaluation
from ssgan.tracking.store import store_failure

log = logging.getLogger("ssgan")


class RunLogger:
    """Records into one MLflow run by id (MlflowClient), so several runs can be recorded at once (seeds
    trained together) and no active run is needed while training."""

    def __init__(self, run_id: str, cfg: Config, split_hash: str, num_labels: int, log_config: bool = True,
                 tags: Optional[dict[str, str]] = None):
        """`log_config=False`: a resumed run, whose params are recorded already (MLflow keeps a param's
        first value; tracking settings may differ on resume). `tags`: further tags, sent with the params (one
        request where the store is far away)."""
        import mlflow
        from mlflow.entities import Param, RunTag

        self.client, self.run_id, self.cfg = mlflow.MlflowClient(), run_id, cfg
        tags = dict(tags or {})
        params = []
        if log_config:
            params = [Param(k, param_value(v)) for k, v in flatten(cfg).items()]
            tags = {"mode": cfg.mode, **split_tags(cfg, split_hash, num_labels), **tags}
        run_tags = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, max(len(params), len(run_tags)), 100):  # MLflow takes at most 100 of each per batch
            self.client.log_batch(run_id, params=params[i : i + 100], tags=run_tags[i : i + 100])
        if log_config:
            self.client.log_dict(run_id, to_dict(cfg), "config.yaml")
        self._fixed_z: Optional[torch.Tensor] = None
        self.failed_uploads: list[str] = []  # artifacts the store did not take (a full disk, say): warned, counted

    def artifact(self, what: str, upload: Callable[[], Any]) -> Any:
        """`upload()`, an artifact upload; its failure is a warning line and a count in the summary, not the
        end of training. Returns what `upload` returns, or None when it failed."""
        try:
            return upload()
        except Exception as e:  # noqa: BLE001 -- OSError, MlflowException: the store did not take it
            self.failed_uploads.append(what)
            log.warning("could not record %s in MLflow (%s); training goes on", what, store_failure(e))
            return None

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def samples_due(self, epoch: int) -> bool:
        """Whether `epoch` gets a grid of generated samples (every `tracking.sample_every` epochs, and the last)."""
        every = self.cfg.tracking.sample_every
        return bool(every) and (epoch % every == 0 or epoch == self.cfg.train.epochs)

    def log_epoch(self, epoch: int, metrics: dict[str, float], generator: Optional[torch.nn.Module]) -> None:
        self.log_metrics(metrics, step=epoch)
        if generator is not None and self.samples_due(epoch):
            grid = self.sample_grid(generator)
            if grid is not None:
                self.artifact(f"the sample grid of epoch {epoch}",
                              lambda: self.client.log_image(self.run_id, grid, key="samples", step=epoch))

    def sample_grid(self, generator: torch.nn.Module, n: int = 100) -> Optional[np.ndarray]:
        """Grid of samples from a fixed noise batch (one row per class for a conditional G)."""
        rows = int(np.sqrt(n))
        if self._fixed_z is None:
            self._fixed_z = torch.rand(n, generator.noise_dim, generator=torch.Generator().manual_seed(0))
        classes = None
        if generator.condition.dim:
            classes = (torch.arange(n) // rows) % generator.condition.num_classes
        return sample_grid(generator, self._fixed_z, classes, self.cfg.data.scale, nrow=rows)

    def log_checkpoint(self, state: dict[str, Any]) -> None:
        def upload() -> None:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "checkpoint.pt"
                torch.save(state, path)
                self.client.log_artifact(self.run_id, str(path))

        self.artifact("the checkpoint", upload)

    def finish(self, summary: dict[str, Any], stop_reason: str) -> None:
        self.client.set_tag(self.run_id, "stop_reason", stop_reason)
        self.client.log_text(self.run_id, json.dumps(summary, indent=2), "summary.json")


def split_tags(cfg: Config, split_hash: str, num_labels: int) -> dict[str, str]:
    """The tags that say which data and which labeled examples a run saw (every method sets them)."""
    return {"dataset": cfg.data.name, "labels": str(num_labels), "split_seed": str(cfg.data.split_seed),
            "split_hash": split_hash}


def run_name(method: str, num_labels: Optional[int], split_seed: int, budget: Optional[str] = None) -> str:
    """A run's name in the MLflow UI, by what it is: e.g. `ssgan · 20 labels · seed 0`."""
    labels = "all labels" if budget == "all" else f"{num_labels} labels"
    return f"{method} · {labels} · seed {split_seed}"


def log_evaluation(ev: Evaluation, step: int, x_test: Optional[torch.Tensor] = None,
                   y_test: Optional[torch.Tensor] = None, scale: str = "tanh", metrics: bool = True) -> None:
    """Final test metrics at the last epoch's step, so they are the run's latest values in MLflow;
    the confusion matrix (PNG and JSON), the classification report and, for images given `x_test` and
    `y_test`, the test images behind the largest confusions. Inside an active run. `metrics=False`: the
    metrics are logged already."""
    import matplotlib.pyplot as plt
    import mlflow

    if metrics:
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


def param_value(v: Any) -> str:
    """A config value as an MLflow param: lists and mappings as JSON, the rest as str()."""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
