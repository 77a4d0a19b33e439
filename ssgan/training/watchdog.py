"""No early stopping, but a watchdog: stop (or warn) when GAN training has visibly failed.

* D's loss stays below `d_loss_below` for `patience` consecutive steps — D wins outright and the
  generator gets no useful gradient;
* any loss becomes NaN or inf;
* the generated samples' relative diversity falls below `min_diversity` (mode collapse).

The per-step bookkeeping stays on the training device (no host sync); `verdict` reads it once per
check interval. Seeds trained at once (ssgan/training/seeds.py) get one watchdog with a counter per seed
(`seeds=S`): `verdicts` says which seeds failed, so one seed's collapse need not stop the others.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ssgan.config import WatchdogConfig

ADVICE = {
    "d_loss_collapse": "D's loss stayed below {thr} for {patience} steps: D wins and G learns nothing; try "
                       "tricks.label_smoothing=true, tricks.label_flip=true, tricks.dropout=0.3, more D noise "
                       "(model.input_noise) or a lower tricks.lr_d",
    "non_finite_loss": "a loss became NaN or inf; try a lower train.lr, tricks.warmup_steps=500 or "
                       "tricks.label_smoothing=true",
    "mode_collapse": "the generated samples lost their diversity (mode collapse); try "
                     "train.gen_loss=feature_matching, tricks.label_flip=true or a lower tricks.lr_g",
}


class Watchdog:
    def __init__(self, cfg: WatchdogConfig, device: torch.device, adversarial: bool = True, seeds: Optional[int] = None):
        self.cfg = cfg
        self.adversarial = adversarial  # supervised training may drive its loss to 0: only NaN/inf count there
        shape = () if seeds is None else (seeds,)  # one counter, or one per seed trained at once
        self.low_streak = torch.zeros(shape, dtype=torch.long, device=device)
        self.max_streak = torch.zeros(shape, dtype=torch.long, device=device)
        self.finite = torch.ones(shape, dtype=torch.bool, device=device)

    def observe(self, losses: dict[str, torch.Tensor], stacked: Optional[torch.Tensor] = None) -> None:
        """Record one step's losses, on device and in place (so a CUDA graph can replay it): each a scalar,
        or (S,) per seed. `stacked`: the same values in one tensor (losses, [S]), when the caller has made it."""
        self.low_streak.add_(1).mul_(losses["loss_d"] < self.cfg.d_loss_below)
        torch.maximum(self.max_streak, self.low_streak, out=self.max_streak)
        if stacked is None:
            stacked = torch.stack([v.float() for v in losses.values()])
        self.finite &= torch.isfinite(stacked).all(0)

    def verdict(self, diversity: Optional[float] = None) -> Optional[str]:
        """The reason to stop, or None. One host sync."""
        return self.verdicts(diversity)[0]

    def verdicts(self, diversity: Optional[float | Sequence[Optional[float]]] = None) -> list[Optional[str]]:
        """Per seed (one entry for a single run): the reason to stop it, or None. `diversity`: the generated
        samples' relative diversity (ssgan/nets/monitor.py), one value or one per seed. One host sync."""
        if self.cfg.action == "off":
            return [None] * self.finite.numel()
        finite, streak = torch.stack([self.finite.long(), self.max_streak]).reshape(2, -1).tolist()
        per_seed = diversity if isinstance(diversity, (list, tuple)) else [diversity] * len(finite)
        return [_reason(f, s, d, self) for f, s, d in zip(finite, streak, per_seed)]

    def reset(self, seed: Optional[int] = None) -> None:
        """After a warning: start counting afresh (for one seed, or all)."""
        at = slice(None) if seed is None else seed
        for counter, value in ((self.low_streak, 0), (self.max_streak, 0), (self.finite, True)):
            counter.view(-1)[at] = value

    def message(self, reason: str) -> str:
        return ADVICE[reason].format(thr=self.cfg.d_loss_below, patience=self.cfg.patience)


def _reason(finite: int, streak: int, diversity: Optional[float], wd: Watchdog) -> Optional[str]:
    if not finite:
        return "non_finite_loss"
    if wd.adversarial and streak >= wd.cfg.patience:
        return "d_loss_collapse"
    if diversity is not None and diversity < wd.cfg.min_diversity:
        return "mode_collapse"
    return None
