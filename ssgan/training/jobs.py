"""What one command trains, as a `Job`: one network (`OneRun`), or several split / training seeds trained at
once (`SeedsAtOnce`). A job loads its data and checks its plan (`prepare`), then trains, resumable, and hands
each of its runs' epochs to `on_epoch` and its results back as `Trained`.

Where the runs are recorded is the caller's: an MLflow store (ssgan/tracking/run.py, `ssgan train`), or
files (bench/gpu_recipe.py, on machines without MLflow).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from torch import nn

from ssgan.config import Config, replace
from ssgan.data.splits import Split, load_split
from ssgan.training.fit import fit
from ssgan.training.seeds import Members, check_seeds, fit_seeds, seeds_id
from ssgan.training.step import check_plan, resolve_device

log = logging.getLogger("ssgan")

# on_epoch(run index, epoch, metrics, generator): `generator()` gives that run's generator (None in supervised
# mode), made only when called
RunEpoch = Callable[[int, int, dict[str, float], Callable[[], Optional[nn.Module]]], None]
StateCallback = Callable[[dict[str, Any]], None]


@dataclass
class Trained:
    """What one run holds at the end of training."""
    classifier: nn.Module  # eval mode: a discriminator, or an Ensemble of them
    generator: Optional[nn.Module]
    epochs_done: int
    seconds: float  # training seconds, over every part of a resumed run
    stop_reason: str  # completed | interrupted | d_loss_collapse | non_finite_loss | mode_collapse
    stop_message: str = ""
    warnings: list[str] = field(default_factory=list)  # the watchdog's, with tricks.watchdog.action=warn
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch, this part and earlier ones
    cuda_graph: str = "off"
    metrics: dict[str, float] = field(default_factory=dict)  # further final metrics (an ensemble's members')
    tags: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # further summary entries


class Job:
    """One kind of training. Set by `__init__`: `cfg` (what a saved state must match) and `cfgs` (one per run);
    by `prepare`: `splits` (one per run) and `key` (the split hash or seeds id a saved state must match)."""

    cfg: Config
    cfgs: list[Config]
    splits: list[Split]
    key: str
    method: str  # what the runs are named after, e.g. ssgan, supervised, ssgan_ensemble
    progress_metric = "lr"  # a metric every epoch reports: which epochs a run holds already
    stop_reason = "completed"  # the training loop's, after `train`

    def prepare(self) -> None:
        raise NotImplementedError

    def train(self, state: Optional[dict[str, Any]], on_state: Optional[StateCallback], on_epoch: RunEpoch,
              progress: Optional[bool] = None) -> list[Trained]:
        raise NotImplementedError

    def tags(self, i: int) -> dict[str, str]:
        return {}

    def state_ids(self, run_ids: list[str]) -> dict[str, Any]:
        """What a saved state names: the run it continues (or, for seeds trained at once, the runs)."""
        return {"run_id": run_ids[0]}

    def summary_file(self, i: int) -> str:
        return "summary.json"


class OneRun(Job):
    """One network on one split (`ssgan train`)."""

    def __init__(self, cfg: Config):
        self.cfg, self.cfgs, self.method = cfg, [cfg], cfg.mode

    def prepare(self) -> None:
        split = load_split(self.cfg.data)
        check_plan(self.cfg, split)
        self.splits, self.key = [split], split.split_hash
        log.info("%s on %s: %d labeled of %d training examples, %d test, %d classes", self.cfg.mode, self.cfg.data.name,
                 len(split.labeled_idx), len(split.x_train), len(split.x_test), split.num_classes)

    def train(self, state, on_state, on_epoch, progress=None) -> list[Trained]:
        r = fit(self.cfg, self.splits[0], on_epoch=lambda e, m, g: on_epoch(0, e, m, lambda: g), progress=progress,
                resume=state, on_state=on_state)
        self.stop_reason = r.stop_reason
        return [Trained(r.classifier, r.generator, len(r.history), r.seconds, r.stop_reason, r.stop_message,
                        r.watchdog_warnings, r.history, r.cuda_graph)]


class SeedsAtOnce(Job):
    """Several runs of one config trained at once (`ssgan.training.seeds.fit_seeds`), run i on split seed
    `seeds[i]` with training seed `train_seeds[i]` (default: the split seed, as `ssgan train --seeds`). A run
    the watchdog stops while the others train on ends as a single run stopped by it would."""

    def __init__(self, cfg: Config, seeds: list[int], train_seeds: Optional[list[int]] = None):
        self.cfg, self.method = cfg, cfg.mode
        self.seeds, self.train_seeds = list(seeds), list(train_seeds or seeds)
        self.cfgs = [replace(cfg, **{"data.split_seed": s, "train.seed": i}) for s, i in zip(self.seeds, self.train_seeds)]

    def prepare(self) -> None:
        loaded = {s: load_split(c.data) for s, c in zip(self.seeds, self.cfgs)}
        self.splits = [loaded[s] for s in self.seeds]
        check_plan(self.cfg, self.splits[0])
        check_seeds(self.cfg, self.splits, self.train_seeds)
        self.key = seeds_id(self.train_seeds, self.splits)
        log.info("%s on %s: split seeds %s at once, %d labeled of %d training examples each", self.cfg.mode,
                 self.cfg.data.name, ",".join(map(str, self.seeds)), len(self.splits[0].labeled_idx),
                 len(self.splits[0].x_train))
        if resolve_device(self.cfg.train.device).type == "cpu":
            log.info("training on a CPU: seeds at once are no faster than one after another (bench/throughput.py "
                     "--stacked); on a GPU they take about the time of one")

    def train(self, state, on_state, on_epoch, progress=None) -> list[Trained]:
        def each(epoch: int, metrics: list[Optional[dict[str, float]]], generators: Members) -> None:
            for i, m in enumerate(metrics):
                if m is not None:  # None: the watchdog stopped this run; the others go on
                    on_epoch(i, epoch, m, lambda i=i: generators[i])

        r = fit_seeds(self.cfg, self.splits, self.train_seeds, on_epoch=each, progress=progress, resume=state,
                      on_state=on_state)
        self.stop_reason = r.stop_reason
        together = {"trained_with_seeds": ",".join(map(str, self.train_seeds))}
        return [Trained(r.classifiers[i], r.generators[i], len(r.histories[i]), r.seconds, r.stop_reasons[i],
                        r.stop_messages[i], r.watchdog_warnings[i], r.histories[i], r.cuda_graph, tags=together,
                        summary={"trained_with_seeds": list(self.train_seeds)}) for i in range(len(self.seeds))]

    def state_ids(self, run_ids: list[str]) -> dict[str, Any]:
        return {"run_ids": run_ids}

    def summary_file(self, i: int) -> str:
        return f"summary-seed{self.seeds[i]}.json"
