"""The one tracked-run path: load the split, open (or resume) the MLflow run(s), train, record, end.

`track(job, ...)` does it for every kind of training (a `ssgan.training.jobs.Job`): one network (`ssgan
train`: `run_training`), several split seeds trained at once, one MLflow run each (`--seeds`:
`run_training_seeds`), and an ensemble of training seeds recorded as one run (`--members`:
ssgan/tracking/ensemble.py). Comparisons and ablations (ssgan/experiments) call these. bench/gpu_recipe.py
runs the same jobs on machines without MLflow and records them in files.

The runs are created before training and recorded into by id while it goes (per-epoch metrics, sample
grids), so no run need be active; the final evaluation, checkpoint and model are recorded with the run
active. With `out_dir` (or `state_path`) the training state is saved as training goes
(ssgan/training/resume.py) and removed when the run completes; `resume=True` continues the run(s) the
state names, leaving out the epochs they hold already.
"""
from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ssgan.config import Config
from ssgan.data.splits import Split
from ssgan.errors import ConfigError, SSGANError
from ssgan.evaluation.metrics import evaluate
from ssgan.serving.checkpoint import make_checkpoint
from ssgan.tracking.logger import RunLogger, run_name
from ssgan.tracking.spool import SPOOL, Journal, Outage, Sender, journals, sync_folder
from ssgan.tracking.store import resolve_uri, store_failure, use_store
from ssgan.training.distributed import launched
from ssgan.training.jobs import Job, OneRun, SeedsAtOnce, Trained
from ssgan.training.resume import (STATE_FILE, check_state, describe, exclusive, load_state, remove_state,
                                   save_state)
from ssgan.training.step import resolve_device

log = logging.getLogger("ssgan")

INTERRUPTED_WAIT = 5.0  # seconds an interrupted or failed run waits for its records to reach the store


def track(job: Job, out_dir: Optional[str | Path] = None, progress: Optional[bool] = None, nested: bool = False,
          tags: Optional[dict[str, str]] = None, run_ids: Optional[list[str]] = None, register: Optional[str] = None,
          alias: str = "champion", resume: bool = False, state_path: Optional[str | Path] = None) -> list[dict[str, Any]]:
    """Train `job` inside its MLflow run(s) and return the summaries (also written to OUT/). `nested=True` makes
    new runs children of the active run; `run_ids` records into existing runs (a comparison's child runs)."""
    import mlflow

    if register and not job.cfg.tracking.log_model:
        raise ConfigError("--register needs the model to be logged; drop tracking.log_model=false")
    state_path = state_file(out_dir, state_path)
    if not launched().main:  # under torchrun rank 0 records the run; the other ranks train beside it
        return follow(job, state_path, resume)
    with exclusive(state_path):  # one process per state
        state = saved_state(state_path, resume)
        job.prepare()  # data and plan errors surface before a run is opened
        if state is not None:
            check_state(state, job.cfg, job.key, resolve_device(job.cfg.train.device))  # before its runs are touched
            run_ids = state.get("run_ids") or ([state["run_id"]] if state.get("run_id") else run_ids)
        experiment_id = use_store(job.cfg, register)
        spool = spool_folder(state_path)
        send_earlier(spool)  # an earlier part's records that did not reach the store: before this part's
        journal = Journal(spool, mlflow.get_tracking_uri(), experiment_id)
        sender = Sender(journal.path, journal).start()
        given = run_ids is not None  # a comparison's or a saved state's runs: their params may be there already
        run_ids = run_ids or [new_run(experiment_id, name_of(job, i), nested) for i in range(len(job.cfgs))]
        resumed = {"resumed_after_epoch": str(state["epoch"])} if state is not None else {}
        loggers = [RunLogger(journal, r, c, s.split_hash, len(s.labeled_idx),
                             tags={**(tags or {}), **job.tags(i), **resumed},
                             log_config=not (given and existing_run(r).data.params))
                   for i, (r, c, s) in enumerate(zip(run_ids, job.cfgs, job.splits))]
        logged = [logged_epochs(r, job.progress_metric) if state is not None else set() for r in run_ids]

        def on_epoch(i: int, epoch: int, metrics: dict[str, float], generator: Callable[[], Optional[nn.Module]]):
            if epoch not in logged[i]:  # a killed part's last epochs are in the run already
                loggers[i].log_epoch(epoch, metrics, generator() if loggers[i].samples_due(epoch) else None)

        def save(s: dict[str, Any]) -> None:
            save_state(state_path, s, job.cfg, job.key, **job.state_ids(run_ids))
            log.info("training state after epoch %d saved to %s", s["epoch"], state_path)

        try:
            trained = job.train(state, save if state_path is not None else None, on_epoch, progress)
        except BaseException as e:
            end_runs(journal, run_ids, "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            # a stop request is answered in seconds (a scheduler kills soon after); what is left, --resume sends
            finish_sending(sender, min(job.cfg.tracking.end_wait, INTERRUPTED_WAIT), spool, run_ids)
            raise
        summaries = []
        for i, (run_id, logger, t) in enumerate(zip(run_ids, loggers, trained)):
            local = Path(out_dir) / job.summary_file(i) if out_dir is not None else None
            summaries.append(record(job.cfgs[i], job.splits[i], logger, experiment_id, t, register, alias, local))
        wait = job.cfg.tracking.end_wait
        if any(t.stop_reason == "interrupted" for t in trained):  # a stop request: answered in seconds
            wait = min(wait, INTERRUPTED_WAIT)
        left, folder = finish_sending(sender, wait, spool, run_ids)
        summaries = [sender.completed(s, s["run_id"]) for s in summaries]
        if left:
            for s in summaries:
                s["not_in_mlflow"] = {"records": left, "spool": str(folder)}
        end_state(state_path, job.stop_reason)
    for i, summary in enumerate(summaries):
        write_summary(summary, out_dir, job.summary_file(i))
    return summaries


def follow(job: Job, state_path: Optional[Path], resume: bool) -> list[dict[str, Any]]:
    """A rank other than 0 of a torchrun job: the same training, from the same saved state, recording nothing.
    Returns what ends it (`stop_reason`, `stop_message`)."""
    state = load_state(state_path) if resume and state_path is not None else None
    job.prepare()
    trained = job.train(state, None, lambda *_: None, progress=False)
    return [{"stop_reason": t.stop_reason, "stop_message": t.stop_message} for t in trained]


def spool_folder(state_path: Optional[Path]) -> Path:
    """Where a run's records wait for the store: beside its training state (OUT/mlflow-spool), else in a
    temporary folder (moved to the working directory by `left_in` when something is left in it)."""
    if state_path is not None:  # one spool per state: a comparison's runs on Ray workers train side by side
        return state_path.parent / (SPOOL if state_path.name == STATE_FILE else f"{SPOOL}-{state_path.stem}")
    return Path(tempfile.mkdtemp(prefix=TEMPORARY)) / SPOOL


TEMPORARY = "ssgan-spool-"


def temporary(spool: Path) -> bool:
    """Whether `spool` is the temporary one of a run without --out."""
    return spool.parent.name.startswith(TEMPORARY) and spool.parent.parent == Path(tempfile.gettempdir())


def left_in(spool: Path, run_ids: list[str]) -> Path:
    """The folder `ssgan sync` takes for records left in `spool`: its OUT, or, for a run without --out, the
    spool moved from its temporary place to ./mlflow-spool-<run id>."""
    if not temporary(spool):
        return spool.parent
    kept = Path.cwd() / f"{SPOOL}-{run_ids[0][:8]}"
    if spool.exists():
        shutil.move(str(spool), kept)
        shutil.rmtree(spool.parent, ignore_errors=True)
    return kept


def send_earlier(spool: Path) -> None:
    """Send what an earlier part of this training left in `spool` (the store was away then)."""
    if not journals(spool):
        return
    try:
        sent, _ = sync_folder(spool)
        log.info("%d record(s) an earlier part of this run left in %s sent to MLflow", sent, spool)
    except Outage as e:
        log.warning("the records an earlier part left in %s are not sent yet (%s); `ssgan sync` sends them", spool, e)


def end_runs(journal: Journal, run_ids: list[str], status: str) -> None:
    """Training stopped on an error or an interrupt: its runs end as FAILED or KILLED."""
    for r in run_ids:
        try:
            journal.add("end", r, status=status)
        except OSError as e:  # the spool's disk is full: tell the store directly, if it takes it
            try:
                import mlflow

                mlflow.MlflowClient().set_terminated(r, status)
            except Exception as store_error:  # noqa: BLE001 -- the store may be what failed (a full disk)
                log.warning("could not mark run %s as %s in MLflow: %s (%s)", r, status, store_failure(store_error), e)


def finish_sending(sender: Sender, wait: float, spool: Path, run_ids: list[str]) -> tuple[int, Optional[Path]]:
    """Wait at most `wait` seconds for the records to reach the store; returns how many did not and the
    folder `ssgan sync` takes for them (None when all were sent), and says so in one line."""
    left = sender.close(wait)
    if not left:
        if temporary(spool):
            shutil.rmtree(spool.parent, ignore_errors=True)  # a run without --out: its temporary spool
        return 0, None
    folder = left_in(spool, run_ids)
    log.warning("%d record(s) not in MLflow (%s); send them with: ssgan sync %s", left,
                sender.outage or "the store did not take them in time", folder)
    return left, folder


def run_training(cfg: Config, out_dir: Optional[str | Path] = None, progress: Optional[bool] = None,
                 nested: bool = False, tags: Optional[dict[str, str]] = None, run_id: Optional[str] = None,
                 register: Optional[str] = None, alias: str = "champion", resume: bool = False,
                 state_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train per `cfg` inside an MLflow run and return the summary (also written to OUT/summary.json).

    `nested=True` opens the run as a child of the active run (ablations); `run_id` records into that
    existing run instead of a new one (a comparison creates its child runs up front). `register`: also
    register the logged model under that name, with `alias` pointing at the new version. With `out_dir` the
    training state is saved to OUT/train_state.pt as training goes and removed when the run completes;
    `resume=True` continues the run saved there, in its MLflow run. `state_path` puts the state file
    elsewhere (a comparison keeps one per child run)."""
    return track(OneRun(cfg), out_dir, progress, nested, tags, [run_id] if run_id else None, register, alias,
                 resume, state_path)[0]


def run_training_seeds(cfg: Config, seeds: list[int], out_dir: Optional[str | Path] = None,
                       progress: Optional[bool] = None, run_ids: Optional[list[str]] = None,
                       nested: bool = False, resume: bool = False,
                       state_path: Optional[str | Path] = None) -> list[dict[str, Any]]:
    """Train `cfg` on several split seeds at once (on a GPU about the time of one seed) and record one MLflow
    run per seed (`run_ids`: existing ones). Returns the summaries (also OUT/summary-seed<s>.json). The
    training state is saved and resumed as `run_training`'s."""
    return track(SeedsAtOnce(cfg, seeds), out_dir, progress, nested, None, run_ids, None, "champion", resume,
                 state_path)


def record(cfg: Config, split: Split, logger: RunLogger, experiment_id: str, trained: Trained,
           register: Optional[str], alias: str, local: Optional[Path] = None) -> dict[str, Any]:
    """Evaluate a trained classifier and record it in its run: metrics, confusion matrix, checkpoint, model,
    summary, the run's end. Returns the summary (its `model_uri` and `registered_model` are filled in once the
    store has them: `Sender.completed`)."""
    ev = evaluate(trained.classifier, split.x_test, split.y_test, split.class_names)
    logger.log_metrics({**ev.metrics(), "train_seconds": round(trained.seconds, 3), **(trained.metrics or {})},
                       step=trained.epochs_done)
    logger.log_evaluation(ev, split.x_test, split.y_test, cfg.data.scale)
    if trained.tags:
        logger.set_tags(trained.tags)
    if cfg.tracking.log_model:
        registered = register if trained.stop_reason == "completed" else None
        logger.log_model(make_checkpoint(cfg, split, trained.classifier, trained.generator), split.x_test,
                         registered, alias)
        if register and not registered:  # a partial model does not take the alias from the model it would replace
            log.warning("model not registered as %r: the run stopped early (%s)%s", register, trained.stop_reason,
                        "; --resume completes and registers it" if trained.stop_reason == "interrupted" else "")
    summary = {
        "run_id": logger.run_id,
        "experiment_id": experiment_id,
        "tracking_uri": resolve_uri(cfg.tracking.uri),
        "model_uri": None,
        "registered_model": None,
        "mode": cfg.mode,
        "dataset": cfg.data.name,
        "labels": len(split.labeled_idx),
        "split_seed": cfg.data.split_seed,
        "split_hash": split.split_hash,
        "train_seed": cfg.train.seed,
        "epochs": cfg.train.epochs,
        "epochs_completed": trained.epochs_done,
        "stop_reason": trained.stop_reason,
        "stop_message": trained.stop_message,
        "watchdog_warnings": trained.warnings,
        "wall_clock_seconds": round(trained.seconds, 3),
        "device": str(resolve_device(cfg.train.device)),
        "world_size": launched().size,  # processes that trained the run (torchrun)
        "hardware": hardware(),
        "failed_uploads": [],  # artifacts the store did not take (warned)
        **ev.metrics(),
        **trained.summary,
    }
    # not done: a scheduler or a dashboard must not take an interrupted run for done
    logger.finish(summary, trained.stop_reason, local, "KILLED" if trained.stop_reason == "interrupted" else "FINISHED")
    log.info("test accuracy %.4f  balanced %.4f  macro-F1 %.4f  (%s, %.1fs, run %s)", ev.accuracy,
             ev.balanced_accuracy, ev.macro_f1, trained.stop_reason, trained.seconds, logger.run_id)
    return summary


def name_of(job: Job, i: int) -> str:
    """Run i's name: `tracking.run_name`, else what it is (`ssgan · 20 labels · seed 0`)."""
    c = job.cfgs[i]
    return c.tracking.run_name or run_name(job.method, len(job.splits[i].labeled_idx), c.data.split_seed)


def state_file(out_dir: Optional[str | Path], state_path: Optional[str | Path]) -> Optional[Path]:
    """Where a run's training state lives: `state_path`, else OUT/train_state.pt, else nowhere (None)."""
    if state_path is None and out_dir is not None:
        state_path = Path(out_dir) / STATE_FILE
    return Path(state_path) if state_path is not None else None


def saved_state(state_path: Optional[Path], resume: bool) -> Optional[dict[str, Any]]:
    """The training state to continue with `resume`; a new run refuses to overwrite an unfinished one."""
    if resume and state_path is None:
        raise ConfigError("--resume continues the run saved in OUT/train_state.pt: give its --out")
    state = load_state(state_path) if resume else None
    if state is None and state_path is not None and (saved := describe(state_path)):
        raise ConfigError(f"{state_path} holds unfinished training ({saved}): add --resume to continue it, or delete the "
                          "file (or choose another --out) to start a new run")
    return state


def end_state(state_path: Optional[Path], stop_reason: str) -> None:
    """A completed run's state is removed; an unfinished one's is kept, and said how to continue."""
    if state_path is not None and stop_reason == "completed":
        remove_state(state_path)
    elif state_path is not None and stop_reason == "interrupted":
        log.warning("to continue this run: the same command with --resume (state in %s)", state_path)
    elif state_path is not None:  # the watchdog: continuing would most likely stop again
        log.warning("the last good epoch's training state is in %s; delete it to start this run afresh", state_path)


def existing_run(run_id: str):
    """The run `run_id` of the current store; one that is not there is a one-line error."""
    import mlflow

    try:
        return mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException as e:
        raise SSGANError(f"cannot open MLflow run {run_id}: {str(e).splitlines()[0]}; is tracking.uri the store "
                         "the run was started in?") from None


def open_run(run_id: str, nested: bool = False):
    """Make an existing run the active one (a context manager that ends it)."""
    import mlflow

    try:
        return mlflow.start_run(run_id=run_id, nested=nested)
    except mlflow.exceptions.MlflowException as e:
        raise SSGANError(f"cannot open MLflow run {run_id}: {str(e).splitlines()[0]}; is tracking.uri the store "
                         "the run was started in?") from None


def new_run(experiment_id: str, name: Optional[str], nested: bool, tags: Optional[dict[str, str]] = None) -> str:
    """Create a run (with the user and source tags `mlflow.start_run` sets, and `tags`), a child of the active
    run when `nested`; returns its id. It stays RUNNING until recorded into with `open_run`."""
    import mlflow
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = mlflow.active_run() if nested else None
    tags = resolve_tags({**({MLFLOW_PARENT_RUN_ID: parent.info.run_id} if parent else {}), **(tags or {})})
    return mlflow.MlflowClient().create_run(experiment_id, run_name=name, tags=tags).info.run_id


def logged_epochs(run_id: str, metric: str = "lr") -> set[int]:
    """The epochs whose metrics a run holds (the steps of its `metric`, logged every epoch)."""
    import mlflow

    return {m.step for m in mlflow.MlflowClient().get_metric_history(run_id, metric)}


def write_summary(summary: dict[str, Any], out_dir: Optional[str | Path], name: str) -> None:
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(json.dumps(summary, indent=2) + "\n")


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads"
