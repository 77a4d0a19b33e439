"""One tracked run: load the split, train, evaluate, record everything in MLflow, write summary.json."""
from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any, Optional

import torch

from ssgan.config import Config, to_dict
from ssgan.data import load_split
from ssgan.evaluate import evaluate
from ssgan.errors import ConfigError
from ssgan.tracking import RunLogger, log_evaluation, resolve_uri, use_store
from ssgan.train import check_plan, fit, resolve_device

log = logging.getLogger("ssgan")


def run_training(cfg: Config, out_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                 nested: bool = False, tags: Optional[dict[str, str]] = None,
                 run_id: Optional[str] = None, register: Optional[str] = None,
                 alias: str = "champion") -> dict[str, Any]:
    """Train per `cfg` inside an MLflow run and return the summary (also written to OUT/summary.json).

    `nested=True` opens the run as a child of the active run (ablations, comparisons); `run_id` records
    into that existing run instead of a new one (a comparison creates its child runs up front).
    `register`: also register the logged model under that name, with `alias` pointing at the new version."""
    import mlflow

    if register and not cfg.tracking.log_model:
        raise ConfigError("--register needs the model to be logged; drop tracking.log_model=false")
    split = load_split(cfg.data)  # data and plan errors surface before a run is opened
    check_plan(cfg, split)
    experiment_id = use_store(cfg)
    log.info("%s on %s: %d labeled of %d training examples, %d test, %d classes",
             cfg.mode, cfg.data.name, len(split.labeled_idx), len(split.x_train), len(split.x_test), split.num_classes)
    from ssgan.serving import log_pyfunc
    from ssgan.serving import register as serving_register

    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=cfg.tracking.run_name,
                          nested=nested) as run:
        tracker = RunLogger(cfg, split.split_hash, len(split.labeled_idx))
        if tags:
            mlflow.set_tags(tags)
        result = fit(cfg, split, on_epoch=tracker.log_epoch, progress=progress)
        ev = evaluate(result.classifier, split.x_test, split.y_test, split.class_names)
        log_evaluation(ev, step=len(result.history))
        model_uri = registered = None
        if cfg.tracking.log_model:
            state = {
                "config": to_dict(cfg), "class_names": split.class_names, "input_shape": split.input_shape,
                "classifier": result.classifier.state_dict(),
                "generator": result.generator.state_dict() if result.generator is not None else None,
                "preprocess": split.preprocess.to_dict(), "feature_names": split.feature_names,
            }
            tracker.log_checkpoint(state)
            model_uri = log_pyfunc(state, split.x_test)
            if register:
                registered = serving_register(model_uri, register, alias)
        summary = {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "tracking_uri": resolve_uri(cfg.tracking.uri),
            "model_uri": model_uri,
            "registered_model": registered,
            "mode": cfg.mode,
            "dataset": cfg.data.name,
            "labels": len(split.labeled_idx),
            "split_seed": cfg.data.split_seed,
            "split_hash": split.split_hash,
            "train_seed": cfg.train.seed,
            "epochs": cfg.train.epochs,
            "epochs_completed": len(result.history),
            "stop_reason": result.stop_reason,
            "stop_message": result.stop_message,
            "watchdog_warnings": result.watchdog_warnings,
            "wall_clock_seconds": round(result.seconds, 3),
            "device": str(resolve_device(cfg.train.device)),
            "hardware": _hardware(),
            **ev.metrics(),
        }
        tracker.finish(summary, result.stop_reason)
    log.info("test accuracy %.4f  balanced %.4f  macro-F1 %.4f  (%s, %.1fs, run %s)",
             ev.accuracy, ev.balanced_accuracy, ev.macro_f1, result.stop_reason, result.seconds, run.info.run_id)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
