"""One tracked run: load the split, train, evaluate, record everything in MLflow, write summary.json."""
from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ssgan.config import Config, replace, to_dict
from ssgan.data import Split, load_split
from ssgan.evaluate import evaluate
from ssgan.errors import ConfigError, SSGANError
from ssgan.resume import STATE_FILE, check_state, describe, exclusive, load_state, save_state
from ssgan.tracking import RunLogger, log_evaluation, resolve_uri, use_store
from ssgan.train import check_plan, fit, resolve_device

log = logging.getLogger("ssgan")


def run_training(cfg: Config, out_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                 nested: bool = False, tags: Optional[dict[str, str]] = None,
                 run_id: Optional[str] = None, register: Optional[str] = None,
                 alias: str = "champion", resume: bool = False,
                 state_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train per `cfg` inside an MLflow run and return the summary (also written to OUT/summary.json).

    `nested=True` opens the run as a child of the active run (ablations, comparisons); `run_id` records
    into that existing run instead of a new one (a comparison creates its child runs up front).
    `register`: also register the logged model under that name, with `alias` pointing at the new version.
    With `out_dir` the training state is saved to OUT/train_state.pt as training goes (ssgan/resume.py) and
    removed when the run completes; `resume=True` continues the run saved there, in its MLflow run.
    `state_path` puts the state file elsewhere (a comparison keeps one per child run)."""
    import mlflow

    if register and not cfg.tracking.log_model:
        raise ConfigError("--register needs the model to be logged; drop tracking.log_model=false")
    state_path = _state_path(out_dir, state_path)
    with exclusive(state_path):  # one process per state
        state = _saved_state(state_path, resume)
        split = load_split(cfg.data)  # data and plan errors surface before a run is opened
        check_plan(cfg, split)
        device = resolve_device(cfg.train.device)
        if state is not None:
            check_state(state, cfg, split.split_hash, device)
            run_id = state.get("run_id")  # None: a state saved without MLflow (bench/gpu_recipe.py) opens a new run
        experiment_id = use_store(cfg)
        log.info("%s on %s: %d labeled of %d training examples, %d test, %d classes", cfg.mode, cfg.data.name,
                 len(split.labeled_idx), len(split.x_train), len(split.x_test), split.num_classes)
        with _open_run(run_id, experiment_id, cfg.tracking.run_name, nested) as run:
            tracker = RunLogger(cfg, split.split_hash, len(split.labeled_idx), log_config=state is None)
            if tags:
                mlflow.set_tags(tags)
            if state is not None:
                mlflow.set_tag("resumed_after_epoch", str(state["epoch"]))

            def save(s: dict[str, Any]) -> None:
                save_state(state_path, s, cfg, split.split_hash, run_id=run.info.run_id)
                log.info("training state after epoch %d saved to %s", s["epoch"], state_path)

            logged = _logged_epochs(run.info.run_id) if state is not None else set()  # a killed part's last epochs

            def on_epoch(epoch: int, metrics: dict[str, float], generator: Optional[nn.Module]) -> None:
                if epoch not in logged:
                    tracker.log_epoch(epoch, metrics, generator)

            result = fit(cfg, split, on_epoch=on_epoch, progress=progress, resume=state,
                         on_state=save if state_path is not None else None)
            summary = _record(cfg, split, tracker, run.info.run_id, experiment_id, result.classifier, result.generator,
                              len(result.history), result.seconds, result.stop_reason, result.stop_message,
                              result.watchdog_warnings, register, alias)
        _end_state(state_path, result.stop_reason)
    _write(summary, out_dir, "summary.json")
    return summary


def _state_path(out_dir: Optional[str | Path], state_path: Optional[str | Path]) -> Optional[Path]:
    if state_path is None and out_dir is not None:
        state_path = Path(out_dir) / STATE_FILE
    return Path(state_path) if state_path is not None else None


def _saved_state(state_path: Optional[Path], resume: bool) -> Optional[dict[str, Any]]:
    """The training state to continue with `resume`; a new run refuses to overwrite an unfinished one."""
    if resume and state_path is None:
        raise ConfigError("--resume continues the run saved in OUT/train_state.pt: give its --out")
    state = load_state(state_path) if resume else None
    if state is None and state_path is not None and (saved := describe(state_path)):
        raise ConfigError(f"{state_path} holds unfinished training ({saved}): add --resume to continue it, or delete the "
                          "file (or choose another --out) to start a new run")
    return state


def _end_state(state_path: Optional[Path], stop_reason: str) -> None:
    """A completed run's state is removed; an unfinished one's is kept, and said how to continue."""
    if state_path is not None and stop_reason == "completed":
        state_path.unlink(missing_ok=True)
    elif state_path is not None and stop_reason == "interrupted":
        log.warning("to continue this run: the same command with --resume (state in %s)", state_path)
    elif state_path is not None:  # the watchdog: continuing would most likely stop again
        log.warning("the last good epoch's training state is in %s; delete it to start this run afresh", state_path)


def _open_run(run_id: Optional[str], experiment_id: str, run_name: Optional[str], nested: bool):
    import mlflow

    try:
        return mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                                run_name=None if run_id else run_name, nested=nested)
    except mlflow.exceptions.MlflowException as e:
        raise SSGANError(f"cannot open MLflow run {run_id}: {str(e).splitlines()[0]}; is tracking.uri the store "
                         "the run was started in?") from None


def run_training_seeds(cfg: Config, seeds: list[int], out_dir: Optional[str | Path] = None,
                       progress: Optional[bool] = None, run_ids: Optional[list[str]] = None,
                       nested: bool = False, resume: bool = False,
                       state_path: Optional[str | Path] = None) -> list[dict[str, Any]]:
    """Train `cfg` on several split seeds at once (`ssgan.seeds.fit_seeds`: on a GPU about the time of one
    seed) and record one MLflow run per seed, as `run_training` would (data.split_seed = train.seed = s).
    The runs are written after training: per-epoch metrics with their epochs, samples of the final
    generator. `run_ids`: record into these existing runs, one per seed (a comparison's child runs).
    Returns the summaries (also written to OUT/summary-seed<s>.json). The training state is saved and
    resumed as `run_training`'s (OUT/train_state.pt, or `state_path`); a resumed run records into the runs
    the state names, leaving out the epochs they hold already. A seed the watchdog stops while the others
    train on is recorded as a single run stopped by it would be (its last good epoch, its `stop_reason`)."""
    import mlflow

    from ssgan.seeds import check_seeds, fit_seeds, seeds_id

    state_path = _state_path(out_dir, state_path)
    with exclusive(state_path):
        state = _saved_state(state_path, resume)

        cfgs = [replace(cfg, **{"data.split_seed": s, "train.seed": s}) for s in seeds]
        splits = [load_split(c.data) for c in cfgs]
        check_plan(cfg, splits[0])
        check_seeds(cfg, splits, seeds)
        experiment_id = use_store(cfg)
        log.info("%s on %s: split seeds %s at once, %d labeled of %d training examples each", cfg.mode, cfg.data.name,
                 ",".join(map(str, seeds)), len(splits[0].labeled_idx), len(splits[0].x_train))
        if resolve_device(cfg.train.device).type == "cpu":
            log.info("training on a CPU: seeds at once are no faster than one after another (bench/throughput.py "
                     "--stacked); on a GPU they take about the time of one")
        key = seeds_id(seeds, splits)
        if state is not None:
            check_state(state, cfg, key, resolve_device(cfg.train.device))  # before its runs are touched
        if state is not None and state.get("run_ids"):  # bench/gpu_recipe.py's states name no runs
            run_ids = state["run_ids"]
        elif state_path is not None and not run_ids:  # the state names the runs it continues: create them now
            run_ids = [_new_run(experiment_id, c.tracking.run_name, nested) for c in cfgs]
        save = (lambda st: save_state(state_path, st, cfg, key, run_ids=run_ids)) if state_path is not None else None
        try:
            result = fit_seeds(cfg, splits, seeds, progress=progress, resume=state, on_state=save)
        except Exception:
            for run_id in run_ids or []:
                mlflow.MlflowClient().set_terminated(run_id, "FAILED")
            raise
        summaries = []
        for i, (s, c, split) in enumerate(zip(seeds, cfgs, splits)):
            with _open_run(run_ids[i] if run_ids else None, experiment_id, c.tracking.run_name, nested) as run:
                logged = _logged_epochs(run.info.run_id)  # a resumed run's first part may have recorded some
                tracker = RunLogger(c, split.split_hash, len(split.labeled_idx), log_config=not logged)
                mlflow.set_tags({"trained_with_seeds": ",".join(map(str, seeds))})
                if state is not None:
                    mlflow.set_tag("resumed_after_epoch", str(state["epoch"]))
                history = result.histories[i]
                for epoch, metrics in enumerate(history, 1):
                    if epoch not in logged:
                        tracker.log_epoch(epoch, metrics, result.generators[i] if epoch == len(history) else None)
                summary = _record(c, split, tracker, run.info.run_id, experiment_id, result.classifiers[i],
                                  result.generators[i], len(history), result.seconds, result.stop_reasons[i],
                                  result.stop_messages[i], result.watchdog_warnings[i], None, "")
                summary["trained_with_seeds"] = list(seeds)
            _write(summary, out_dir, f"summary-seed{s}.json")
            summaries.append(summary)
        _end_state(state_path, result.stop_reason)
    return summaries


def _new_run(experiment_id: str, run_name: Optional[str], nested: bool) -> str:
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = mlflow.active_run() if nested else None
    tags = {MLFLOW_PARENT_RUN_ID: parent.info.run_id} if parent else {}
    return mlflow.MlflowClient().create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def _logged_epochs(run_id: str, metric: str = "lr") -> set[int]:
    """The epochs whose metrics a run holds (the steps of its `metric`, logged every epoch)."""
    import mlflow

    return {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, metric)}


def _record(cfg: Config, split: Split, tracker: RunLogger, run_id: str, experiment_id: str, classifier: nn.Module,
            generator: Optional[nn.Module], epochs_done: int, seconds: float, stop_reason: str, stop_message: str,
            warnings: list[str], register: Optional[str], alias: str) -> dict[str, Any]:
    """Evaluate a trained classifier and record it in the active run: metrics, confusion matrix, model,
    summary. Returns the summary."""
    import mlflow

    from ssgan.serving import log_pyfunc
    from ssgan.serving import register as serving_register

    ev = evaluate(classifier, split.x_test, split.y_test, split.class_names)
    log_evaluation(ev, step=epochs_done, x_test=split.x_test, y_test=split.y_test, scale=cfg.data.scale)
    mlflow.log_metric("train_seconds", round(seconds, 3), step=epochs_done)  # a resumed run's, over all its parts
    model_uri = registered = None
    if cfg.tracking.log_model:
        state = {
            "config": to_dict(cfg), "class_names": split.class_names, "input_shape": split.input_shape,
            "classifier": classifier.state_dict(),
            "generator": generator.state_dict() if generator is not None else None,
            "preprocess": split.preprocess.to_dict(), "feature_names": split.feature_names,
            "members": len(classifier.members) if hasattr(classifier, "members") else None,  # ssgan/ensemble.py
        }
        tracker.log_checkpoint(state)
        model_uri = log_pyfunc(state, split.x_test)
        if register and stop_reason == "completed":
            registered = serving_register(model_uri, register, alias)
        elif register:  # a partial model does not take the alias from the model it would replace
            log.warning("model not registered as %r: the run stopped early (%s)%s", register, stop_reason,
                        "; --resume completes and registers it" if stop_reason == "interrupted" else "")
    summary = {
        "run_id": run_id,
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
        "epochs_completed": epochs_done,
        "stop_reason": stop_reason,
        "stop_message": stop_message,
        "watchdog_warnings": warnings,
        "wall_clock_seconds": round(seconds, 3),
        "device": str(resolve_device(cfg.train.device)),
        "hardware": _hardware(),
        **ev.metrics(),
    }
    tracker.finish(summary, stop_reason)
    log.info("test accuracy %.4f  balanced %.4f  macro-F1 %.4f  (%s, %.1fs, run %s)",
             ev.accuracy, ev.balanced_accuracy, ev.macro_f1, stop_reason, seconds, run_id)
    return summary


def _write(summary: dict[str, Any], out_dir: Optional[str | Path], name: str) -> None:
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(summary, indent=2) + "\n")


def _hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
