"""One run of a comparison: its config, its child runs in MLflow, and training it (`run_one`), the same on
this machine and on a Ray worker (ssgan/experiments/cluster.py)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from ssgan.config import Config, replace
from ssgan.experiments.baselines import run_baseline
from ssgan.experiments.plan import ALL, ENSEMBLE, MODES
from ssgan.errors import SSGANError
from ssgan.tracking.ensemble import run_ensemble
from ssgan.tracking.logger import run_name
from ssgan.tracking.run import new_run, run_training, run_training_seeds
from ssgan.training.resume import has_state, load_state, remove_state

log = logging.getLogger("ssgan")


def run_config(cfg: Config, method: str, budget: str, seed: int) -> Config:
    """The config of one run of the grid. Child runs do not log the model (train the winner with `ssgan train`)."""
    return replace(cfg, **{"mode": method if method in MODES else ("ssgan" if method == ENSEMBLE else cfg.mode),
                           "data.labels": None if budget == ALL else int(budget),
                           "data.split_seed": seed, "train.seed": seed, "tracking.log_model": False,
                           "tracking.run_name": run_name(method, None if budget == ALL else int(budget), seed, budget)})


def describe_run(method: str, budget: str, seeds: list[int]) -> str:
    return f"{method}, {budget} labels, seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, seeds))}"


def state_file(states: Optional[Path], method: str, budget: str, seeds: list[int]) -> Optional[Path]:
    """Where a network run of the comparison keeps its training state (None: scikit-learn's methods)."""
    if states is None or method not in (*MODES, ENSEMBLE):
        return None
    return states / (f"{method}-{budget}-seed{seeds[0]}.pt" if len(seeds) == 1
                     else f"{method}-{budget}-seeds{'-'.join(map(str, seeds))}.pt")


def child_runs(cfg: Config, method: str, budget: str, seeds: list[int], experiment_id: str, parent_id: str,
               states: Optional[Path] = None) -> list[str]:
    """The child runs (one per seed) of these seeds: those a saved training state continues, else new ones."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    state_path = state_file(states, method, budget, seeds)
    resumed = saved_runs(state_path, describe_run(method, budget, seeds), len(seeds)) if state_path else None
    return resumed or [new_run(experiment_id, run_config(cfg, method, budget, seed).tracking.run_name, nested=False,
                               tags={MLFLOW_PARENT_RUN_ID: parent_id, "method": method, "budget": budget,
                                     "split_seed": str(seed)})
                       for seed in seeds]


def run_one(cfg: Config, method: str, budget: str, seeds: list[int], experiment_id: str, parent_id: str,
             progress: Optional[bool], members: int = 3, states: Optional[Path] = None,
             run_ids: Optional[list[str]] = None) -> None:
    """One child run per seed, trained together when there are several. The runs are created before
    training (here, or by the caller: `run_ids`), so that a failure has a run to be recorded in; a network
    run with a saved training state in `states` continues in the run it was saved from."""
    import mlflow

    client = mlflow.MlflowClient()
    run_cfgs = [run_config(cfg, method, budget, seed) for seed in seeds]
    what = describe_run(method, budget, seeds)
    state_path = state_file(states, method, budget, seeds)
    resumed = saved_runs(state_path, what, len(seeds)) if state_path is not None else None
    run_ids = resumed or run_ids or child_runs(cfg, method, budget, seeds, experiment_id, parent_id)
    start = time.perf_counter()
    try:
        if len(seeds) > 1:
            summaries = run_training_seeds(run_cfgs[0], seeds, progress=progress, run_ids=run_ids, nested=True,
                                           state_path=state_path, resume=resumed is not None)
        elif method in MODES:
            summaries = [run_training(run_cfgs[0], progress=progress, nested=True, run_id=run_ids[0],
                                      state_path=state_path, resume=resumed is not None)]
        elif method == ENSEMBLE:
            summaries = [run_ensemble(run_cfgs[0], members, run_id=run_ids[0], progress=progress,
                                      state_path=state_path, resume=resumed is not None)]
        else:
            summaries = [run_baseline(method, run_cfgs[0], run_id=run_ids[0])]
    except KeyboardInterrupt:
        for run_id in run_ids:
            fail_run(client, run_id, "KILLED", "interrupted by the user")
        raise
    except Exception as e:  # one run's failure is recorded and the comparison goes on
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        log.warning("%s failed: %s", what, reason, exc_info=log.isEnabledFor(logging.DEBUG))
        for run_id in run_ids:
            fail_run(client, run_id, "FAILED", f"{type(e).__name__}: {reason}")
        return  # a saved state stays: --resume retries the run from it
    if any(s["stop_reason"] == "interrupted" for s in summaries):  # fit() caught the Ctrl-C: the state stays
        for r in run_ids:
            fail_run(client, r, "KILLED", "interrupted by the user")
        raise KeyboardInterrupt
    for run_id, seed, s in zip(run_ids, seeds, summaries):
        if s["stop_reason"] != "completed":  # the watchdog stopped training: its numbers are not the method's
            tag_run(client, run_id, {"outcome": "failed", "failure_reason": f"{s['stop_reason']}: {s['stop_message']}"})
            log.warning("%s, %s labels, seed %d failed: %s", method, budget, seed, s["stop_reason"])
            if state_path is not None:  # a watchdog stop is final, not resumed
                remove_state(state_path)
            continue
        client.set_tag(run_id, "outcome", "finished")
        # this run's own wall time: a run created ahead (on a Ray driver, or before a resume) has started earlier
        client.log_metric(run_id, "run_seconds", round(time.perf_counter() - start, 3))
        if resumed and "failure_reason" in client.get_run(run_id).data.tags:  # the interruption it recovered from
            client.delete_tag(run_id, "failure_reason")
        log.info("%s, %s labels, seed %d: test accuracy %.4f, macro-F1 %.4f", method, budget, seed,
                 s["test_accuracy"], s["test_macro_f1"])


def saved_runs(state_path: Path, what: str, count: int) -> Optional[list[str]]:
    """The MLflow runs (one per seed) a saved training state continues, or None (no state, or one that
    cannot be used: it is removed and the runs start afresh)."""
    if not has_state(state_path):
        return None
    try:
        state = load_state(state_path)
    except SSGANError as e:
        run_ids, reason = None, str(e)
    else:
        run_ids, reason = state.get("run_ids") or [state.get("run_id")], "it names no MLflow run for each seed"
    if run_ids and len(run_ids) == count and all(run_ids):
        log.info("%s: continuing run%s %s from the saved training state", what, "s" if count > 1 else "",
                 ", ".join(run_ids))
        return run_ids
    log.warning("%s: starting afresh, the saved training state is unusable: %s", what, reason)
    remove_state(state_path)
    return None


def fail_run(client, run_id: str, status: str, reason: str) -> None:
    tag_run(client, run_id, {"outcome": "failed", "failure_reason": reason})
    client.set_terminated(run_id, status)


def tag_run(client, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

