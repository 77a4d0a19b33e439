"""Measure the gain: every method over label budgets x split seeds, as child runs of one MLflow parent run.

For each (label budget, split seed) every method sees the same labeled examples (`data.labels`,
`data.split_seed`; equal `split_hash` tags prove it) and the same test set. `ssgan` and `supervised` are
the toolkit's two modes of the same network (`train.seed` = the split seed); `ssgan_ensemble` is
`--members` ssgan runs per split, their class probabilities averaged (ssgan/tracking/ensemble.py); `label_spreading`
and `self_training` are scikit-learn's (ssgan/experiments/baselines.py). The report (ssgan/experiments/report.py) is built from what
the MLflow store holds, so `ssgan report` rebuilds it exactly.

A network run (ssgan, supervised or an ensemble's members) saves its training state to OUT/state/<parent run
id>/<method>-<budget>-seed<s>.pt (seeds<s1-s2-..>.pt for seeds trained at once) as it trains
(ssgan/training/resume.py); `--resume` continues an interrupted or killed run from there, in its MLflow run(s),
instead of from its first epoch. scikit-learn's methods (seconds) start again.

Child runs carry the tags `method`, `budget` ("20", "all"), `labels` (how many were used), `split_seed`,
`split_hash`, `outcome` (finished | failed) and, for a failed run, `failure_reason`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from ssgan.experiments.cluster import RayOptions, check_store, connect, run_on_ray
from ssgan.experiments.origin import ConfigOrigin
from ssgan.experiments.plan import ALL, ENSEMBLE, MODES, STACKABLE, Plan
from ssgan.experiments.runs import run_config, run_one
from ssgan.config import Config, replace, to_dict
from ssgan.data.splits import draw_labeled, load_split
from ssgan.errors import ConfigError
from ssgan.training.resume import exclusive
from ssgan.tracking.store import resolve_uri, use_store
from ssgan.training.step import check_plan

log = logging.getLogger("ssgan")


def check_budgets(cfg: Config, plan: Plan) -> None:
    """Fail before any training when a budget cannot be drawn from the data or a mode's config cannot run."""
    split = load_split(replace(cfg, **{"data.labels": None}).data)  # every labeled training example
    known, num_classes = len(split.labeled_idx), split.num_classes
    for budget in plan.budgets:
        if budget == ALL:
            continue
        n = int(budget)
        if n > known:
            raise ConfigError(f"--labels {n} is more than the {known} labeled training examples of {cfg.data.name}")
        if n < num_classes:
            raise ConfigError(f"--labels {n} is fewer than one label per class ({num_classes} classes)")
        for seed in range(plan.seeds):
            draw_labeled(split.y_train.numpy(), n, seed, num_classes)  # a class with too few labeled examples
    for method in set(plan.methods) & {*MODES, ENSEMBLE}:
        check_plan(replace(cfg, mode="ssgan" if method == ENSEMBLE else method), split)


def fingerprint(cfg: Config, plan: Plan) -> str:
    """Same config (tracking aside) and same grid = same fingerprint: what `--resume` looks for."""
    text = json.dumps({"config": {k: v for k, v in to_dict(cfg).items() if k != "tracking"}, **plan.tags()},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_comparison(cfg: Config, plan: Plan, out_dir: str | Path = "compare", resume: bool = False,
                   progress: Optional[bool] = None, seeds_at_once: bool = False,
                   origin: Optional[ConfigOrigin] = None, ray: Optional[RayOptions] = None,
                   state_dir: Optional[str | Path] = None) -> dict[str, Any]:
    """Train and evaluate every (method, budget, seed) of `plan`; write the report to `out_dir` and log it
    to the parent run. Returns the report's summary. `seeds_at_once`: ssgan and supervised train all
    seeds of a budget together (ssgan/training/seeds.py; on a GPU about the time of one seed). `origin`: the config
    file and --set overrides `cfg` came from, tagged on the parent run and stated in the report.

    A run that fails (an exception, or the watchdog stops it) is recorded as failed with its reason and
    the comparison goes on. `resume=True` reopens the latest parent run with the same fingerprint and
    skips its children that MLflow has as FINISHED (a watchdog stop is deterministic, so it is not
    retried); an interrupted network run goes on from its saved training state. Ctrl-C stops the current
    run (its state is saved); the report then lists what is missing.

    `ray`: every run is a Ray task (ssgan/experiments/cluster.py), their training states in `state_dir`
    (default OUT/state; on a cluster, a folder every node sees).
    """
    check_budgets(cfg, plan)
    origin = origin or ConfigOrigin.of(cfg, "a Config passed to run_comparison")
    if ray is not None:
        check_store(resolve_uri(cfg.tracking.uri), ray)
        connect(ray)  # an unreachable cluster fails here, before the parent run is opened
    experiment_id = use_store(cfg)  # an unreachable tracking server fails here, before any training
    state_root = Path(state_dir) if state_dir is not None else Path(out_dir) / "state"
    lock = state_root / f"compare-{fingerprint(cfg, plan)}"  # the same comparison in the same OUT
    try:
        with exclusive(lock, "comparison (its training states)"):
            return _compare(cfg, plan, out_dir, resume, progress, seeds_at_once, experiment_id, origin, ray,
                            state_root)
    finally:
        _remove_empty(lock.parent)


def _compare(cfg: Config, plan: Plan, out_dir: str | Path, resume: bool, progress: Optional[bool],
             seeds_at_once: bool, experiment_id: str, origin: ConfigOrigin, ray: Optional[RayOptions],
             state_root: Path) -> dict[str, Any]:
    import mlflow

    from ssgan.experiments.report import write_report

    with _parent_run(cfg, plan, experiment_id, resume, origin) as parent:
        states = state_root / parent.info.run_id
        done = _finished(experiment_id, parent.info.run_id)
        todo = [r for r in plan.runs() if r not in done]
        if done:
            log.info("%d of %d runs already finished", len(done), len(plan.runs()))
        interrupted = False
        bar = tqdm(total=len(plan.runs()), initial=len(plan.runs()) - len(todo), desc="runs", unit="run",
                   disable=None if progress is None else not progress)
        try:
            if ray is not None:
                run_on_ray(cfg, run_batches(todo, seeds_at_once), experiment_id, parent.info.run_id, plan.members,
                           states, ray, mlflow.get_tracking_uri(), bar)
            for method, budget, seeds in run_batches(todo, seeds_at_once) if ray is None else []:
                bar.set_postfix_str(f"{method}, {budget} labels, seed{'s' if len(seeds) > 1 else ''} "
                                    f"{','.join(map(str, seeds))}")
                run_one(cfg, method, budget, seeds, experiment_id, parent.info.run_id, progress, plan.members, states)
                bar.update(len(seeds))
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: the report lists the runs still to do; rerun with --resume to finish")
        finally:
            bar.close()
            _remove_empty(states, states.parent)
        summary = write_report(experiment_id, parent.info.run_id, out_dir)
        for name in summary["files"]:
            mlflow.log_artifact(str(Path(out_dir) / name))
        if interrupted:
            mlflow.end_run(status="KILLED")
    summary["interrupted"] = interrupted
    return summary


def _parent_run(cfg: Config, plan: Plan, experiment_id: str, resume: bool, origin: ConfigOrigin):
    """The active parent run: with `resume`, the latest comparison with the same fingerprint, reopened;
    otherwise (or when there is none) a new one."""
    import mlflow

    key = fingerprint(cfg, plan)
    if resume:
        runs = mlflow.search_runs([experiment_id], filter_string=f"tags.kind = 'compare' and tags.fingerprint = '{key}'",
                                  order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
        if runs:
            log.info("resuming comparison %s", runs[0].info.run_id)
            return mlflow.start_run(run_id=runs[0].info.run_id)
        log.info("no earlier comparison with these arguments in this experiment: starting a new one")
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"compare {','.join(plan.budgets)} labels x {plan.seeds} seeds",
                           tags={"kind": "compare", "dataset": cfg.data.name, "fingerprint": key, **plan.tags(),
                                 **origin.tags()})
    mlflow.log_dict(to_dict(cfg), "config.yaml")
    return run


def run_batches(todo: list[tuple[str, str, int]], seeds_at_once: bool) -> list[tuple[str, str, list[int]]]:
    """The runs to do as (method, budget, seeds): one seed each, or with `seeds_at_once` all seeds of a
    (mode, budget) together for ssgan and supervised (the consistency modes, scikit-learn's methods and ensembles,
    which stack their members, one at a time)."""
    if not seeds_at_once:
        return [(m, b, [s]) for m, b, s in todo]
    batches: dict[tuple[str, str], list[int]] = {}
    out: list[tuple[str, str, list[int]]] = []
    for m, b, s in todo:
        if m in STACKABLE:
            if (m, b) not in batches:
                batches[(m, b)] = []
                out.append((m, b, batches[(m, b)]))
            batches[(m, b)].append(s)
        else:
            out.append((m, b, [s]))
    return out


def _remove_empty(*dirs: Path) -> None:
    """These folders (a comparison's state folder, OUT/state), in order, where they are empty."""
    for d in dirs:
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def _finished(experiment_id: str, parent_id: str) -> set[tuple[str, str, int]]:
    """(method, budget, seed) of the parent's children that MLflow has as FINISHED."""
    import mlflow

    runs = mlflow.search_runs([experiment_id], output_format="list", filter_string=(
        f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'FINISHED'"))
    return {(r.data.tags["method"], r.data.tags["budget"], int(r.data.tags["split_seed"])) for r in runs}
