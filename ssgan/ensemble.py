"""An ensemble of SSGAN runs on one split: K runs that differ only in their training seed, their
classifiers' class probabilities averaged.

One run's test accuracy depends on its trajectory as much as on its labels: on digits with 20 labels
the same split gave 79.6-96 % over training seeds, and on MNIST-100 one training seed in four read
crossed 7s as 2 (README, "Time to accuracy"). The mean of K runs' probabilities keeps what most of them
got right. Member m trains with `train.seed = S + 1000 m` (S = the split seed), so member 0 is the
plain run; the members train at once (`ssgan.seeds.fit_seeds`). Nothing is picked by its test score.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ssgan.config import Config, replace
from ssgan.data import load_split
from ssgan.errors import ConfigError
from ssgan.evaluate import Evaluation, score
from ssgan.tracking import RunLogger, log_evaluation, use_store
from ssgan.train import check_plan, predict_proba

SEED_STRIDE = 1000  # member m's training seed: split seed + SEED_STRIDE * m


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


def run_ensemble(cfg: Config, members: int, run_id: Optional[str] = None, nested: bool = True,
                 progress: Optional[bool] = None) -> dict[str, Any]:
    """Train `members` SSGAN runs on the split `cfg.data` draws and record their ensemble in one MLflow run
    (`run_id`: an existing one): the ensemble's test metrics, confusion matrix and confused examples, each
    member's test accuracy (`member<m>_test_accuracy`) and every epoch's mean member accuracy. Returns
    the summary; its `stop_reason` is not "completed" when the watchdog stopped the members."""
    import mlflow

    from ssgan.seeds import fit_seeds

    cfg = replace(cfg, mode="ssgan")
    split = load_split(cfg.data)
    check_plan(cfg, split)
    seeds = member_seeds(cfg.data.split_seed, members)
    experiment_id = use_store(cfg)
    with mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=cfg.tracking.run_name,
                          nested=nested) as run:
        RunLogger(cfg, split.split_hash, len(split.labeled_idx))
        mlflow.set_tags({"members": str(members), "member_train_seeds": ",".join(map(str, seeds))})
        start = time.perf_counter()
        result = fit_seeds(cfg, [split] * members, seeds, progress=progress)
        seconds = time.perf_counter() - start
        for epoch, rows in enumerate(zip(*result.histories), 1):
            accs = [r["test_accuracy"] for r in rows if "test_accuracy" in r]
            if accs:
                mlflow.log_metric("mean_member_test_accuracy", float(np.mean(accs)), step=epoch)
        ev, member_evs = evaluate_ensemble(result.classifiers, split.x_test, split.y_test, split.class_names)
        epochs_done = len(result.histories[0])
        log_evaluation(ev, step=epochs_done, x_test=split.x_test, y_test=split.y_test, scale=cfg.data.scale)
        member_acc = {f"member{m}_test_accuracy": e.accuracy for m, e in enumerate(member_evs)}
        mlflow.log_metrics({**member_acc, "mean_member_test_accuracy": float(np.mean(list(member_acc.values())))},
                           step=epochs_done)
        mlflow.set_tag("stop_reason", result.stop_reason)
    return {"run_id": run.info.run_id, "method": "ssgan_ensemble", "members": members, "train_seeds": seeds,
            "labels": len(split.labeled_idx), "split_hash": split.split_hash, "epochs_completed": epochs_done,
            "stop_reason": result.stop_reason, "stop_message": result.stop_message,
            "wall_clock_seconds": round(seconds, 3), **member_acc, **ev.metrics()}
