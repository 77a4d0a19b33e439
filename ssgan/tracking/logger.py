"""What a training run records in MLflow: params and config, per-epoch metrics and sample grids, the
checkpoint, the test evaluation (metrics, confusion matrix, classification report) and summary.json."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import yaml

from ssgan.config import Config, flatten, to_dict
from ssgan.evaluation.figures import confused_examples_figure, confusion_figure, sample_grid
from ssgan.evaluation.metrics import Evaluation
from ssgan.tracking.spool import Journal
from ssgan.training.distributed import launched

log = logging.getLogger("ssgan")


class RunLogger:
    """Records into one MLflow run by id through the training's `Journal` (ssgan/tracking/spool.py): appended
    locally at once, sent to the store by a background sender. Several runs can be recorded at once (seeds
    trained together) and no active run is needed."""

    def __init__(self, journal: Journal, run_id: str, cfg: Config, split_hash: str, num_labels: int,
                 log_config: bool = True, tags: Optional[dict[str, str]] = None):
        """`log_config=False`: a resumed run, whose params are recorded already (MLflow keeps a param's
        first value; tracking settings may differ on resume). `tags`: further tags, sent with the params."""
        self.journal, self.run_id, self.cfg = journal, run_id, cfg
        self.resumed = not log_config  # a model an earlier part logged is retired when this one's is logged
        tags = dict(tags or {})
        params: dict[str, str] = {}
        if log_config:
            params = self.params()
            tags = {"mode": cfg.mode, **split_tags(cfg, split_hash, num_labels), **tags}
        keys = list(params)
        for i in range(0, max(len(keys), 1), 100):  # MLflow takes at most 100 params per batch
            journal.batch(run_id, params={k: params[k] for k in keys[i : i + 100]}, tags=tags if i == 0 else None)
        if cfg.tracking.log_model:  # made now, off the end's critical path; its files are uploaded at the end
            journal.add("model_create", run_id, what="the model", params=self.params())
        if log_config:
            self.artifact("the config", "config.yaml", lambda p: p.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False)))
        self._fixed_z: Optional[torch.Tensor] = None

    def params(self) -> dict[str, str]:
        """The resolved config, and how many processes train the run (torchrun's world size)."""
        return {**{k: param_value(v) for k, v in flatten(self.cfg).items()}, "world_size": str(launched().size)}

    def artifact(self, what: str, name: str, write: Callable[[Path], None], folder: Optional[str] = None) -> str:
        """A file for the run's artifacts (under `folder`), written by `write(path)`; a failed upload is a warning
        line and a count in the summary (`failed_uploads`), not the end of training. Returns the file's place in
        the spool."""
        return self.journal.add("file", self.run_id, files={name: write}, what=what, dir=folder)[name]

    def set_tags(self, tags: dict[str, str]) -> None:
        self.journal.batch(self.run_id, tags=tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.journal.batch(self.run_id, metrics=metrics, step=step)

    def samples_due(self, epoch: int) -> bool:
        """Whether `epoch` gets a grid of generated samples (every `tracking.sample_every` epochs, and the last)."""
        every = self.cfg.tracking.sample_every
        return bool(every) and (epoch % every == 0 or epoch == self.cfg.train.epochs)

    def log_epoch(self, epoch: int, metrics: dict[str, float], generator: Optional[torch.nn.Module]) -> None:
        self.log_metrics(metrics, step=epoch)
        if generator is not None and self.samples_due(epoch):
            grid = self.sample_grid(generator)
            if grid is not None:
                self.journal.add("image", self.run_id, files={"samples.npy": lambda p: np.save(p, grid)},
                                 what=f"the sample grid of epoch {epoch}", key="samples", step=epoch)

    def sample_grid(self, generator: torch.nn.Module, n: int = 100) -> Optional[np.ndarray]:
        """Grid of samples from a fixed noise batch (one row per class for a conditional G)."""
        rows = int(np.sqrt(n))
        if self._fixed_z is None:
            self._fixed_z = torch.rand(n, generator.noise_dim, generator=torch.Generator().manual_seed(0))
        classes = None
        if generator.condition.dim:
            classes = (torch.arange(n) // rows) % generator.condition.num_classes
        return sample_grid(generator, self._fixed_z, classes, self.cfg.data.scale, nrow=rows)

    def log_evaluation(self, ev: Evaluation, x_test: Optional[torch.Tensor], y_test: Optional[torch.Tensor],
                       scale: str) -> None:
        """The confusion matrix, classification report and confused test images (see `write_evaluation`)."""
        with tempfile.TemporaryDirectory() as d:
            for path in write_evaluation(ev, Path(d), x_test, y_test, scale):
                self.artifact("the confusion matrix and classification report", path.name,
                              lambda p, src=path: shutil.copyfile(src, p))

    def log_model(self, state: dict[str, Any], x_example: torch.Tensor, register: Optional[str], alias: str) -> None:
        """The checkpoint (an artifact) and the pyfunc model; `register`: then registered under that name."""
        checkpoint = self.artifact("the checkpoint", "checkpoint.pt", lambda p: torch.save(state, p))
        self.journal.add("model", self.run_id, what="the model", params=self.params(), retire=self.resumed,
                         checkpoint=checkpoint,  # the model is made from the same file, written once
                         files={"example.pt": lambda p: torch.save(x_example[:4].cpu().clone(), p)})
        if register:
            self.journal.add("register", self.run_id, what=f"the registration as {register!r}", name=register,
                             alias=alias)

    def finish(self, summary: dict[str, Any], stop_reason: str, local: Optional[Path], status: str) -> None:
        """The stop reason, summary.json (completed with the model's URI when sent; `local`: the copy in OUT,
        brought up to date then) and the run's end with `status`."""
        self.set_tags({"stop_reason": stop_reason})
        self.journal.add("summary", self.run_id, files={"summary.json": lambda p: p.write_text(json.dumps(summary))},
                         local=str(local.resolve()) if local is not None else None)
        self.journal.add("end", self.run_id, status=status)


def split_tags(cfg: Config, split_hash: str, num_labels: int) -> dict[str, str]:
    """The tags that say which data and which labeled examples a run saw (every method sets them)."""
    return {"dataset": cfg.data.name, "labels": str(num_labels), "split_seed": str(cfg.data.split_seed),
            "split_hash": split_hash}


def run_name(method: str, num_labels: Optional[int], split_seed: int, budget: Optional[str] = None) -> str:
    """A run's name in the MLflow UI, by what it is: e.g. `ssgan · 20 labels · seed 0`."""
    labels = "all labels" if budget == "all" else f"{num_labels} labels"
    return f"{method} · {labels} · seed {split_seed}"


def write_evaluation(ev: Evaluation, folder: Path, x_test: Optional[torch.Tensor] = None,
                     y_test: Optional[torch.Tensor] = None, scale: str = "tanh") -> list[Path]:
    """Write the confusion matrix (PNG and JSON), the classification report and, for images given `x_test` and
    `y_test`, the test images behind the largest confusions into `folder`; returns the files."""
    import matplotlib.pyplot as plt

    files = []

    def figure(fig, name: str) -> None:
        fig.savefig(folder / name)
        plt.close(fig)
        files.append(folder / name)

    def text(content: str, name: str) -> None:
        (folder / name).write_text(content)
        files.append(folder / name)

    figure(confusion_figure(ev.confusion, ev.class_names, f"test accuracy {ev.accuracy:.4f}"), "confusion_matrix.png")
    fig = confused_examples_figure(ev, x_test, y_test, scale) if x_test is not None else None
    if fig is not None:
        figure(fig, "confused_examples.png")
    text(json.dumps(ev.report, indent=2), "classification_report.json")
    text(ev.report_text, "classification_report.txt")
    text(json.dumps({"labels": list(ev.class_names), "matrix": ev.confusion.tolist()}, indent=2), "confusion_matrix.json")
    return files


def log_evaluation(ev: Evaluation, step: int, x_test: Optional[torch.Tensor] = None,
                   y_test: Optional[torch.Tensor] = None, scale: str = "tanh", metrics: bool = True) -> None:
    """Final test metrics at the last epoch's step, so they are the run's latest values in MLflow, and the files
    of `write_evaluation`; inside an active run (the baselines'). `metrics=False`: the metrics are logged already."""
    import mlflow

    if metrics:
        mlflow.log_metrics(ev.metrics(), step=step)
    with tempfile.TemporaryDirectory() as d:
        write_evaluation(ev, Path(d), x_test, y_test, scale)
        mlflow.log_artifacts(d)


def param_value(v: Any) -> str:
    """A config value as an MLflow param: lists and mappings as JSON, the rest as str()."""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
