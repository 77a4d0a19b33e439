"""A comparison's runs as Ray tasks (`ssgan compare --ray ADDRESS`): each (method, budget, seed) is one task
with the resources it asks for, placed by Ray, on this machine (`local`) or a cluster (`auto`,
`ray://host:10001`). Nothing here schedules: Ray does, and retries a task whose worker or node died.

The driver keeps the parent run and creates each child run before its task is submitted, so that a retried
task records into the same run, continuing from its saved training state when the state folder is on
storage every node sees (`--state-dir`; with `local`, OUT/state), else starting it over. Every task records
into the one MLflow store all nodes reach: an http(s) tracking server or a SQL database; SQLite only with
`local`. The report is written by the driver from the store, as for a sequential comparison.
"""
from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ssgan.config import Config, from_dict, to_dict
from ssgan.errors import ConfigError, SSGANError
from ssgan.experiments.runs import child_runs, describe_run, fail_run, run_one
from ssgan.training.resume import stop_on_sigterm

log = logging.getLogger("ssgan")

RETRIES = 2  # a task whose worker or node dies is run again this many times


@dataclass(frozen=True)
class RayOptions:
    address: str  # what ray.init takes: "local", "auto", "ray://host:10001"
    cpus_per_run: float = 1.0
    gpus_per_run: Optional[float] = None  # None: 1 when the cluster has GPUs, else 0

    @property
    def local(self) -> bool:
        return self.address == "local"


def check_store(uri: str, options: RayOptions) -> None:
    """Every node must reach the store: a SQLite file works only for a Ray instance on this machine."""
    if uri.startswith("sqlite:") and not options.local:
        raise ConfigError(f"--ray {options.address}: the MLflow store {uri} is a file on this machine, which the "
                          "cluster's other nodes cannot reach; use an http(s):// tracking server (make server) or a "
                          "SQL database as tracking.uri / $MLFLOW_TRACKING_URI, or --ray local")


def connect(options: RayOptions):
    """ray.init for `options.address`; returns the ray module."""
    try:
        import ray
    except ImportError:
        raise SSGANError("--ray needs Ray: pip install 'ssgan[ray]'") from None
    if not ray.is_initialized():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Ray's own notes on a timed-out client: the error below says it
                if options.local:
                    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True,
                             logging_level=logging.WARNING)
                else:
                    ray.init(address=options.address, log_to_driver=True, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise SSGANError(f"--ray {options.address}: cannot connect to the Ray cluster ({str(e).splitlines()[0]}); "
                             "start it with `ray start --head` or give its address") from None
        if threading.current_thread() is threading.main_thread():
            stop_on_sigterm()  # ray.init put its own SIGTERM handler (exit at once) in place of ssgan's (Ctrl-C)
    return ray


def on_worker(uri: str, threads: int) -> None:
    """A Ray worker set up as the driver's process is: log lines (Ray prefixes them with the task's run and
    sends them to the driver), torch threads, the MLflow store."""
    import mlflow
    import torch

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    torch.set_num_threads(max(1, threads))
    mlflow.set_tracking_uri(uri)


def run_task(cfg_dict: dict[str, Any], method: str, budget: str, seeds: list[int], experiment_id: str,
             parent_id: str, members: int, states: Optional[str], run_ids: list[str], uri: str, threads: int) -> str:
    """One comparison run on a Ray worker: the same `run_one` a sequential comparison calls, into the child
    runs the driver created. Returns the run's description."""
    on_worker(uri, threads)
    run_one(from_dict(cfg_dict), method, budget, seeds, experiment_id, parent_id, False, members,
            Path(states) if states else None, run_ids)
    return describe_run(method, budget, seeds)


def run_options(ray, options: RayOptions) -> dict[str, Any]:
    """The Ray task options of one run: its resources; retried when its worker or node dies, not when it raises."""
    gpus = options.gpus_per_run
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return {"num_cpus": options.cpus_per_run, "num_gpus": gpus, "max_retries": RETRIES, "retry_exceptions": False}


def run_on_ray(cfg: Config, batches: list[tuple[str, str, list[int]]], experiment_id: str, parent_id: str,
               members: int, states: Optional[Path], options: RayOptions, uri: str, bar) -> None:
    """Submit every (method, budget, seeds) of `batches` as a task and wait for them, the bar counting finished
    runs; a task that fails for good is recorded as failed. Ctrl-C cancels what has not finished (its runs
    are left KILLED, for --resume) and raises KeyboardInterrupt."""
    import mlflow

    ray = connect(options)
    task, each = ray.remote(run_task), run_options(ray, options)
    client = mlflow.MlflowClient()
    pending: dict[Any, tuple[str, list[str], int]] = {}
    for method, budget, seeds in batches:
        run_ids = child_runs(cfg, method, budget, seeds, experiment_id, parent_id, states)
        what = describe_run(method, budget, seeds)
        ref = task.options(name=what, **each).remote(to_dict(cfg), method, budget, seeds, experiment_id, parent_id,
                                                     members, str(states) if states else None, run_ids, uri,
                                                     int(options.cpus_per_run))
        pending[ref] = (what, run_ids, len(seeds))
    log.info("%d run(s) submitted to Ray at %s", len(pending), options.address)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # back in Python each second: Ctrl-C
            if not done:
                continue
            what, run_ids, count = pending.pop(done[0])
            try:
                ray.get(done[0])
            except Exception as e:  # noqa: BLE001 -- the task failed for good (its retries spent): recorded, go on
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                log.warning("%s failed on Ray: %s", what, reason)
                for run_id in run_ids:
                    fail_run(client, run_id, "FAILED", f"{type(e).__name__}: {reason}")
            bar.update(count)
    except KeyboardInterrupt:
        for ref, (what, run_ids, _) in pending.items():
            ray.cancel(ref)
            for run_id in run_ids:
                fail_run(client, run_id, "KILLED", "interrupted by the user")
        log.warning("%d run(s) cancelled on Ray", len(pending))
        raise
    finally:
        if options.local:
            ray.shutdown()  # this machine's Ray instance ends with the comparison


def train_task(cfg_dict: dict[str, Any], run_id: str, tags: dict[str, str], uri: str, threads: int) -> dict[str, Any]:
    """One network run (`run_training`) on a Ray worker, into the run the driver created; returns its summary."""
    from ssgan.tracking.run import run_training

    on_worker(uri, threads)
    return run_training(from_dict(cfg_dict), progress=False, run_id=run_id, tags=tags)


def train_on_ray(jobs: list[tuple[str, Config, str, dict[str, str]]], options: RayOptions,
                 uri: str) -> list[dict[str, Any]]:
    """Train each (name, config, run id, tags) of `jobs` as a Ray task; returns their summaries in the order
    of `jobs`. A task that fails for good raises its error here; Ctrl-C cancels the rest."""
    ray = connect(options)
    task, each = ray.remote(train_task), run_options(ray, options)
    refs = [task.options(name=name, **each).remote(to_dict(cfg), run_id, tags, uri, int(options.cpus_per_run))
            for name, cfg, run_id, tags in jobs]
    log.info("%d run(s) submitted to Ray at %s", len(refs), options.address)
    try:
        waiting = list(refs)
        while waiting:
            _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=1.0)  # back in Python each second
        return ray.get(refs)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref)
        raise
    finally:
        if options.local:
            ray.shutdown()
