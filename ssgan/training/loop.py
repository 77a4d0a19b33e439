"""The one epoch loop, used by `fit` (one run, ssgan/training/fit.py) and `fit_seeds` (several seeds trained
at once as one batched model, ssgan/training/seeds.py).

Every epoch: `steps` calls of the (CUDA-graphed, when asked) train step, each followed by the learning-rate
schedule and the weight averages; the watchdog looks every `check_every` steps and after the epoch's
metrics; then the epoch is handed on (history, log line, `on_epoch`, the resumable state). Ctrl-C stops
cleanly after the current step; a watchdog stop rolls the networks back to the last good epoch.

What differs between the two paths is supplied by a subclass: how a batch is drawn (`next_batch`), the
per-epoch metrics (`epoch_metrics`), how the watchdog's verdict is applied (`watch`: one run stops, one of
several seeds is held while the others go on) and what an epoch's end records (`epoch_done`).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from ssgan.config import Config
from ssgan.training.consistency import gaussian_noise, settings
from ssgan.training.distributed import STOP, World, local_seed, rank_lost
from ssgan.training.graphs import GraphedStep
from ssgan.training.resume import Keeper, interrupted_message
from ssgan.training.tricks import Schedule, lr_factor, noise_scale, set_noise_scale, sigmoid_rampup
from ssgan.training.watchdog import Watchdog

log = logging.getLogger("ssgan")

StepFn = Callable[..., dict[str, torch.Tensor]]  # train_step(nets, cfg, x_lb, y_lb, x_ulb, x_ulb2) -> losses


class EpochLoop:
    """Subclasses set up their networks, then call `EpochLoop.__init__`, and implement the four hooks."""

    def __init__(self, cfg: Config, train_step: StepFn, nets: Any, emas: list, noisy: nn.Module, watchdog: Watchdog,
                 steps: int, total: int, graphed: bool, device: torch.device, world: World = World()):
        self.cfg, self.train_step, self.nets, self.emas = cfg, train_step, nets, emas
        self.world = world  # under torchrun: this rank's place (ssgan/training/distributed.py)
        self.noisy = noisy  # the module whose Gaussian-noise layers `tricks.noise_anneal` scales
        self.watchdog, self.steps, self.total = watchdog, steps, total
        t, tricks, own = cfg.train, cfg.tricks, settings(cfg)  # own: a consistency mode's ssl settings
        self.schedule = Schedule([o for o in (nets.opt_d, nets.opt_g) if o is not None],
                                 lambda s: lr_factor(t, tricks, s, total),
                                 nets.ramp, lambda s: sigmoid_rampup(s, own.rampup_steps if own else 0))
        self.check_every = min(tricks.watchdog.patience, 50)
        self.keys: list[str] = []  # the losses train_step returns, in order
        self.sums = torch.zeros(0, device=device)  # their per-epoch sums (losses[, S]), on the device, in place
        self.run_step = GraphedStep(self.step) if graphed else self.step
        self.stop_reason, self.stop_message = "completed", ""
        self.keeper: Optional[Keeper] = None  # made by the subclass just before `run`
        nets.D.train()
        self.noise_on = gaussian_noise(cfg)  # D's Gaussian noise layers (ssl.<mode>.gaussian_noise in a consistency mode)
        set_noise_scale(noisy, noise_scale(tricks, 0, total, self.noise_on))
        if nets.G is not None:
            nets.G.train()

    # -- what a subclass supplies ------------------------------------------------------------------------------
    def next_batch(self) -> tuple[Optional[torch.Tensor], ...]:
        """(x_lb, y_lb, x_ulb, x_ulb2) for the next step."""
        raise NotImplementedError

    def epoch_metrics(self, sums: torch.Tensor, epoch_start: float) -> Any:
        """The epoch's metrics from its summed losses (losses[, S]; `self.steps` steps), after its last step."""
        raise NotImplementedError

    def watch(self, epochs_done: int, metrics: Any = None) -> bool:
        """Apply the watchdog's verdict (during an epoch: `metrics` None); True when training must stop."""
        raise NotImplementedError

    def epoch_done(self, epoch: int, metrics: Any) -> None:
        """Record a finished epoch: history, log line, `on_epoch`, then `self.keeper.epoch_done`."""
        raise NotImplementedError

    @property
    def epochs_done(self) -> int:
        raise NotImplementedError

    # -- the loop ----------------------------------------------------------------------------------------------
    def step(self, *batch: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One train step and its bookkeeping, on the device (no host sync): what a CUDA graph replays."""
        losses = self.train_step(self.nets, self.cfg, *batch)
        stacked = torch.stack([v.float() for v in losses.values()])  # one tensor: a kernel per step, not per loss
        if self.world.spread:  # under torchrun: the losses of the global batch, the same on every rank
            stacked = self.world.mean(stacked)
            losses = dict(zip(losses, stacked))
        self.watchdog.observe(losses, stacked)
        if self.keys:
            self.sums.add_(stacked)
        else:  # first step (always eager, also when graphed)
            self.keys.extend(losses)
            self.sums = stacked.clone()
        return losses

    def run(self, progress: Optional[bool] = None) -> bool:
        """Train the remaining epochs. Returns True when the watchdog stopped training and the networks were
        rolled back to the last good epoch."""
        world = self.world
        try:
            with STOP.deferred(world):  # under torchrun a stop request is one decision of all ranks (`watch`)
                self.epochs(progress)
        except KeyboardInterrupt:
            self.stop_reason, self.stop_message = "interrupted", "interrupted by the user"
            log.warning("interrupted: %s", interrupted_message(self.epochs_done, self.keeper.good["epoch"]))
        except Exception as e:  # a fault: the last good epoch's state is saved before the error goes on
            self.keeper.save_on_error()
            failure = rank_lost(e, world, self.keeper.good["epoch"])  # another rank's process ended
            if failure is not None:
                raise failure from None
            raise
        return self.keeper.stop(self.stop_reason)

    def epochs(self, progress: Optional[bool]) -> None:
        """The epochs after `epochs_done`, until the last or a stop."""
        t, tricks = self.cfg.train, self.cfg.tricks
        for epoch in range(self.epochs_done + 1, t.epochs + 1):
            epoch_start = time.perf_counter()
            if self.world.spread:  # this rank's own stream (dropout, noise layers), drawn again on a resume
                torch.manual_seed(local_seed(t.seed, self.world.rank, epoch))
            self.sums.zero_()
            for i in tqdm(range(self.steps), desc=f"epoch {epoch}/{t.epochs}", disable=quiet(progress), leave=False):
                batch = self.next_batch()
                if tricks.noise_anneal:
                    set_noise_scale(self.noisy, noise_scale(tricks, (epoch - 1) * self.steps + i, self.total,
                                                            self.noise_on))
                self.run_step(*batch)
                self.schedule.step()
                for ema in self.emas:  # the evaluated average first, then train.ema_compare's
                    ema.update(self.nets.D)
                if (i + 1) % self.check_every == 0 and self.watch(epoch - 1):
                    break
            if self.stop_reason != "completed":
                break
            # Host sync once per epoch: read the summed losses and evaluate.
            metrics = self.epoch_metrics(self.sums, epoch_start)
            if self.watch(epoch - 1, metrics):
                break
            self.epoch_done(epoch, metrics)

    def cuda_graph(self) -> str:
        """off | on | failed: <reason> (train.cuda_graph, ssgan/training/graphs.py)."""
        step = self.run_step
        if not isinstance(step, GraphedStep):
            return "off"
        return "on" if step.captured else f"failed: {step.failure}" if step.failure else "off"


def quiet(progress: Optional[bool]) -> Optional[bool]:
    """tqdm's `disable` for `progress`: None shows bars only on a TTY."""
    return None if progress is None else not progress


def fmt(v: float) -> str:
    """A metric in a log line."""
    return f"{v:.4g}"
