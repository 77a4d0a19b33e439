"""An ensemble of SSGAN runs on one split: K runs that differ only in their training seed, their
classifiers' class probabilities averaged.

One run's test accuracy depends on its trajectory as much as on its labels: on digits with 20 labels
split 1 gave 79.6-92.0 % over four runs of one config, and on MNIST-100 2 runs in 9 read crossed
7s as 2 (README, "Time to accuracy"). The mean of K runs' probabilities keeps what most of them
got right. Member m trains with `train.seed = S + 1000 m` (S = the split seed), so member 0 is the
plain run; the members train at once (`ssgan.seeds.fit_seeds`). Nothing is picked by its test score.

`Ensemble` is the trained classifier: a module that returns the log of the members' mean class
probability, so everything that scores, saves, serves or predicts with one discriminator does the same
with an ensemble (`ssgan train --members K`; the checkpoint says `members: K`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ssgan.config import Config, replace
from ssgan.data import load_split
from ssgan.errors import ConfigError
from ssgan.evaluate import Evaluation, score
from ssgan.tracking import RunLogger, use_store
from ssgan.train import check_plan, predict_proba

log = logging.getLogger("ssgan")

SEED_STRIDE = 1000  # member m's training seed: split seed + SEED_STRIDE * m


class Ensemble(nn.Module):
    """K discriminators as one classifier: forward(x) = (log of the members' mean probability over the K
    real classes, member 0's features). softmax of that output is the mean probability itself."""

    def __init__(self, members: list[nn.Module], num_classes: int):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [m(x) for m in self.members]
        probs = torch.stack([torch.softmax(logits[:, : self.num_classes], dim=1) for logits, _ in outputs]).mean(0)
        return probs.clamp_min(1e-30).log(), outputs[0][1]


def member_seeds(split_seed: int, members: int) -> list[int]:
    """The training seeds of an ensemble's members; the first is the split seed (the plain run's)."""
    if members < 1:
        raise ConfigError(f"an ensemble needs at least 1 member, got {members}")
    return [split_seed + SEED_STRIDE * m for m in range(members)]


def evaluate_ensemble(classifiers: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
                      class_names: tuple[str, ...]) -> tuple[Evaluation, list[Evaluation]]:
    """The evaluation of the members' mean class probability, and each member's."""
    k = len(class_names)
    probs = [predict_proba(c, x, k) for c in classifiers]
    y_true = y.cpu().numpy()
    members = [score(y_true, p.argmax(1).numpy(), class_names) for p in probs]
    return score(y_true, torch.stack(probs).mean(0).argmax(1).numpy(), class_names), members


def _stopped_members(result, seeds: list[int]) -> dict[int, str]:
    """The members the watchdog stopped while the others trained on: member -> why (its reason, seed, epochs)."""
    if result.stop_reason not in ("completed", "interrupted"):
        return {}  # it stopped them all: the ensemble keeps every member's last good epoch, and says so
    return {m: f"{reason} after {len(h)} good epoch(s), training seed {s}"
            for m, (reason, h, s) in enumerate(zip(result.stop_reasons, result.histories, seeds))
            if reason not in ("completed", "interrupted")}


def run_ensemble(cfg: Config, members: int, out_dir: Optional[str | Path] = None, run_id: Optional[str] = None,
                 nested: bool = True, progress: Optional[bool] = None, register: Optional[str] = None,
                 alias: str = "champion", resume: bool = False,
                 state_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Train `members` SSGAN runs on the split `cfg.data` draws and record their ensemble in one MLflow run
    (`run_id`: an existing one), as `run_training` records one network: the ensemble's test metrics,
    confusion matrix and confused examples, its model when `tracking.log_model` (an `Ensemble`), plus each
    member's test accuracy (`member<m>_test_accuracy`) and every epoch's mean member accuracy. Returns the
    summary (also OUT/summary.json); its `stop_reason` is not "completed" when the watchdog stopped them
    all. A member the watchdog stops while others train on is left out of the average (tag
    `members_stopped`, summary `members_averaged`); its test accuracy at its last good epoch is still logged.
    The training state of all members is saved and resumed as `run_training`'s (OUT/train_state.pt, or
    `state_path`); a resumed ensemble records into the run its state names."""
    import mlflow

    from ssgan.resume import check_state, exclusive, save_state
    from ssgan.run import _end_state, _logged_epochs, _open_run, _record, _saved_state, _state_path, _write
    from ssgan.seeds import fit_seeds, seeds_id
    from ssgan.train import resolve_device

    cfg = replace(cfg, mode="ssgan")
    state_path = _state_path(out_dir, state_path)
    with exclusive(state_path):
        state = _saved_state(state_path, resume)
        split = load_split(cfg.data)
        check_plan(cfg, split)
        seeds = member_seeds(cfg.data.split_seed, members)
        key = seeds_id(seeds, [split] * members)
        if state is not None:
            check_state(state, cfg, key, resolve_device(cfg.train.device))  # before its run is touched
            run_id = state.get("run_id") or run_id
        experiment_id = use_store(cfg)
        with _open_run(run_id, experiment_id, cfg.tracking.run_name, nested) as run:
            tracker = RunLogger(cfg, split.split_hash, len(split.labeled_idx), log_config=state is None)
            mlflow.set_tags({"members": str(members), "member_train_seeds": ",".join(map(str, seeds))})
            if state is not None:
                mlflow.set_tag("resumed_after_epoch", str(state["epoch"]))
            save = ((lambda st: save_state(state_path, st, cfg, key, run_id=run.info.run_id))
                    if state_path is not None else None)
            result = fit_seeds(cfg, [split] * members, seeds, progress=progress, resume=state, on_state=save)
            # an interrupted first part recorded the epochs it had trained
            logged = _logged_epochs(run.info.run_id, "mean_member_test_accuracy") if state is not None else set()
            epochs_done = result.epochs_done
            for epoch in range(1, epochs_done + 1):  # over the members still training at that epoch
                accs = [h[epoch - 1]["test_accuracy"] for h in result.histories if len(h) >= epoch]
                if accs and epoch not in logged:
                    mlflow.log_metric("mean_member_test_accuracy", float(np.mean(accs)), step=epoch)
                    logged.add(epoch)
            _, member_evs = evaluate_ensemble(result.classifiers, split.x_test, split.y_test, split.class_names)
            member_acc = {f"member{m}_test_accuracy": e.accuracy for m, e in enumerate(member_evs)}
            final = dict(member_acc)
            if epochs_done not in logged:  # the last epoch was not evaluated on its own (or no epoch ran)
                final["mean_member_test_accuracy"] = float(np.mean(list(member_acc.values())))
            mlflow.log_metrics(final, step=epochs_done)
            stopped = _stopped_members(result, seeds)
            kept = [c for m, c in enumerate(result.classifiers) if m not in stopped] or result.classifiers
            if stopped:
                mlflow.set_tag("members_stopped", "; ".join(f"member {m}: {why}" for m, why in stopped.items()))
                if len(kept) < members:
                    log.warning("the ensemble averages %d of its %d members: the watchdog stopped %s", len(kept),
                                members, "; ".join(f"member {m} ({why})" for m, why in stopped.items()))
            ensemble = Ensemble(kept, split.num_classes).eval()
            warnings = [f"member {m}: {w}" for m, ws in enumerate(result.watchdog_warnings) for w in ws]
            summary = _record(cfg, split, tracker, run.info.run_id, experiment_id, ensemble, result.generators[0],
                              epochs_done, result.seconds, result.stop_reason, result.stop_message,
                              warnings, register, alias)
        _end_state(state_path, result.stop_reason)
    summary.update({"method": "ssgan_ensemble", "members": members, "train_seeds": seeds, **member_acc,
                    "members_averaged": len(kept), "members_stopped": stopped})
    _write(summary, out_dir, "summary.json")
    return summary
