"""An ensemble of SSGAN runs on one split, recorded as one MLflow run (`ssgan train --members K`): K runs
that differ only in their training seed, their classifiers' class probabilities averaged
(`ssgan.nets.inference.Ensemble`; the checkpoint says `members: K`).

One run's test accuracy depends on its trajectory as much as on its labels (docs/results/ shows how much
runs of one config spread); the mean of K runs' probabilities keeps what most of them got right. Member m
trains with `train.seed = S + 1000 m` (S = the split seed), so member 0 is the plain run; the members train
at once (`ssgan.training.seeds.fit_seeds`). Nothing is picked by its test score.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ssgan.config import Config, replace
from ssgan.data.splits import load_split
from ssgan.evaluation.metrics import evaluate_ensemble
from ssgan.nets.inference import Ensemble
from ssgan.tracking.run import track
from ssgan.training.jobs import Job, Trained
from ssgan.training.seeds import Members, SeedsResult, fit_seeds, member_seeds, seeds_id
from ssgan.training.step import check_plan

log = logging.getLogger("ssgan")

METHOD = "ssgan_ensemble"


def stopped_members(result: SeedsResult, seeds: list[int]) -> dict[int, str]:
    """The members the watchdog stopped while the others trained on: member -> why (its reason, seed, epochs)."""
    if result.stop_reason not in ("completed", "interrupted"):
        return {}  # it stopped them all: the ensemble keeps every member's last good epoch, and says so
    return {m: f"{reason} after {len(h)} good epoch(s), training seed {s}"
            for m, (reason, h, s) in enumerate(zip(result.stop_reasons, result.histories, seeds))
            if reason not in ("completed", "interrupted")}


class EnsembleJob(Job):
    """`members` ssgan runs of the split `cfg.data` draws, recorded in one MLflow run as a single run (`ssgan.training.jobs.OneRun`) records one
    network: the ensemble's test metrics, confusion matrix and model, plus each member's test accuracy
    (`member<m>_test_accuracy`) and every epoch's mean member accuracy. A member the watchdog stops while
    the others train on is left out of the average (tag `members_stopped`, summary `members_averaged`)."""

    progress_metric = "mean_member_test_accuracy"

    method = METHOD

    def __init__(self, cfg: Config, members: int):
        self.cfg = replace(cfg, mode="ssgan")
        self.cfgs, self.members = [self.cfg], members
        self.seeds = member_seeds(cfg.data.split_seed, members)

    def prepare(self) -> None:
        split = load_split(self.cfg.data)
        check_plan(self.cfg, split)
        self.splits, self.key = [split], seeds_id(self.seeds, [split] * self.members)

    def tags(self, i: int) -> dict[str, str]:
        return {"members": str(self.members), "member_train_seeds": ",".join(map(str, self.seeds))}

    def train(self, state, on_state, on_epoch, progress=None) -> list[Trained]:
        split, reported = self.splits[0], set()

        def each(epoch: int, metrics: list[Optional[dict[str, float]]], generators: Members) -> None:
            accs = [m["test_accuracy"] for m in metrics if m is not None]  # the members still training
            if accs:
                on_epoch(0, epoch, {"mean_member_test_accuracy": float(np.mean(accs))}, lambda: generators[0])
                reported.add(epoch)

        r = fit_seeds(self.cfg, [split] * self.members, self.seeds, on_epoch=each, progress=progress,
                      resume=state, on_state=on_state)
        self.stop_reason = r.stop_reason
        _, member_evs = evaluate_ensemble(r.classifiers, split.x_test, split.y_test, split.class_names)
        member_acc = {f"member{m}_test_accuracy": e.accuracy for m, e in enumerate(member_evs)}
        final = dict(member_acc)
        earlier = state["epoch"] if state is not None else 0  # a saved state's epochs were all reported
        if r.epochs_done not in reported and not 0 < r.epochs_done <= earlier:  # no epoch ran, or none was reported
            final["mean_member_test_accuracy"] = float(np.mean(list(member_acc.values())))
        stopped = stopped_members(r, self.seeds)
        kept = [c for m, c in enumerate(r.classifiers) if m not in stopped] or r.classifiers
        tags = {"members_stopped": "; ".join(f"member {m}: {why}" for m, why in stopped.items())} if stopped else {}
        if len(kept) < self.members:
            log.warning("the ensemble averages %d of its %d members: the watchdog stopped %s", len(kept), self.members,
                        "; ".join(f"member {m} ({why})" for m, why in stopped.items()))
        warnings = [f"member {m}: {w}" for m, ws in enumerate(r.watchdog_warnings) for w in ws]
        summary = {"method": METHOD, "members": self.members, "train_seeds": self.seeds, **member_acc,
                   "members_averaged": len(kept), "members_stopped": stopped}
        return [Trained(Ensemble(kept, split.num_classes).eval(), r.generators[0], r.epochs_done, r.seconds,
                        r.stop_reason, r.stop_message, warnings, cuda_graph=r.cuda_graph, metrics=final, tags=tags,
                        summary=summary)]


def run_ensemble(cfg: Config, members: int, out_dir: Optional[str | Path] = None, run_id: Optional[str] = None,
                 nested: bool = True, progress: Optional[bool] = None, register: Optional[str] = None,
                 alias: str = "champion", resume: bool = False,
                 state_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train `members` ssgan runs on one split and record their ensemble in one MLflow run (`run_id`: an
    existing one). Returns the summary (also OUT/summary.json); its `stop_reason` is not "completed" when the
    watchdog stopped every member. The training state is saved and resumed as `run_training`'s."""
    return track(EnsembleJob(cfg, members), out_dir, progress, nested, None, [run_id] if run_id else None, register,
                 alias, resume, state_path)[0]
