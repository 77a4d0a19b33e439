"""`fit`: one training run of `cfg` on a split, through the one epoch loop (ssgan/training/loop.py)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from ssgan.config import Config
from ssgan.data.splits import Split
from ssgan.nets.monitor import collapse_metrics
from ssgan.training.batches import BatchSource, index_streams
from ssgan.training.distributed import join
from ssgan.training.ema import EMA, ema_metric
from ssgan.training.loop import EpochLoop, fmt
from ssgan.training.resume import Keeper, Parts
from ssgan.training.step import build_nets, check_plan, prepare, resolve_device, train_step
from ssgan.training.watchdog import Watchdog

log = logging.getLogger("ssgan")


@dataclass
class TrainResult:
    classifier: nn.Module  # the EMA discriminator (or the raw one when ema_decay = 0), in eval mode
    generator: Optional[nn.Module]
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "completed"  # completed | interrupted | d_loss_collapse | non_finite_loss | mode_collapse
    stop_message: str = ""
    watchdog_warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cuda_graph: str = "off"  # off | on | failed: <reason> (train.cuda_graph, ssgan/training/graphs.py)


EpochCallback = Callable[[int, dict[str, float], Optional[nn.Module]], None]
StateCallback = Callable[[dict[str, Any]], None]


def fit(cfg: Config, split: Split, on_epoch: Optional[EpochCallback] = None, progress: Optional[bool] = None,
        resume: Optional[dict[str, Any]] = None, on_state: Optional[StateCallback] = None) -> TrainResult:
    """Train per `cfg` on `split`. `on_epoch(epoch, metrics, generator)` is called after every epoch.

    `progress=None` shows tqdm bars only on a TTY. Ctrl-C stops cleanly after the current step. When
    the watchdog stops training, the networks are rolled back to the end of the last good epoch.
    Either way the result says why training stopped (`stop_reason`).

    `on_state(state)` receives the whole training state after the latest finished epoch (ssgan/training/resume.py)
    every `train.state_every_s` seconds and when training stops early; `resume=state` continues such a
    run after its last epoch, and it ends as the uninterrupted run would.
    """
    run = SingleLoop(cfg, split, on_epoch, resume, on_state)
    if run.run(progress):
        log.warning("watchdog stopped training after %d good epoch(s): %s", run.epochs_done, run.stop_message)
    result = run.result
    result.stop_reason, result.stop_message = run.stop_reason, run.stop_message
    result.seconds, result.cuda_graph = run.keeper.seconds(), run.cuda_graph()
    result.classifier.eval()
    if result.generator is not None:
        result.generator.eval()
    return result


class SingleLoop(EpochLoop):
    """One network (D, and G in ssgan mode) on one split."""

    def __init__(self, cfg: Config, split: Split, on_epoch: Optional[EpochCallback], resume: Optional[dict[str, Any]],
                 on_state: Optional[StateCallback]):
        t = cfg.train
        world, device = join(resolve_device(t.device))  # under torchrun: this rank's place and device
        self.world = world
        torch.manual_seed(t.seed)  # the same on every rank: the same initial weights and batch-wide draws
        self.split, self.on_epoch = split, on_epoch
        self.data = data = BatchSource(split.x_train, split.y_train, device, t.data_on_device)  # on the device when it fits
        init_idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(t.seed))[:500]
        x_probe, _ = data.get(init_idx)  # fixed real batch: weight-norm init and the collapse monitor
        nets = prepare(build_nets(cfg, split.input_shape, split.num_classes, device, x_init=x_probe, world=world), cfg,
                       world)
        ema = EMA(nets.D, t.ema_decay) if t.ema_decay > 0 else None
        self.evaluated = ema.model if ema else nets.D
        nets.teacher = ema.model if cfg.mode == "mean_teacher" else None  # the mean teacher: the evaluated average
        self.compared = [EMA(nets.D, d) for d in t.ema_compare]  # further averages, evaluated only (train.ema_compare)
        index_device = data.index_device  # batches drawn by index where the data live
        self.idx_lb = split.labeled_idx.to(index_device) if index_device else split.labeled_idx
        self.x_test, self.y_test = ((split.x_test.to(device), split.y_test.to(device)) if data.resident
                                    else (split.x_test, split.y_test))
        steps, total = check_plan(cfg, split)
        self.lb_stream, self.ulb_stream, self.ulb2_stream = index_streams(len(self.idx_lb), data, t.batch_size, t.seed)
        self.x_probe = x_probe[:256]
        self.z_probe = torch.rand(256, cfg.model.noise_dim, generator=torch.Generator().manual_seed(t.seed)).to(device)
        self.c_probe = torch.arange(256, device=device) % split.num_classes  # every class equally, for a conditional G
        watchdog = Watchdog(cfg.tricks.watchdog, device, adversarial=nets.G is not None)
        emas = ([ema] if ema else []) + self.compared
        super().__init__(cfg, train_step, nets, emas, nets.D, watchdog, steps, total, nets.graphed, device, world)
        self.result = TrainResult(classifier=self.evaluated, generator=nets.G)
        if resume is not None:
            self.result.history = list(resume["history"])
            log.info("resuming after epoch %d of %d", len(self.result.history), t.epochs)
        parts = Parts(nets, emas, self.schedule, [self.lb_stream, self.ulb_stream, self.ulb2_stream], watchdog, device,
                      shared=nets.shard.generator)
        self.keeper = Keeper(parts, cfg, split.split_hash, self.epochs_done, self.result.history, resume, on_state)

    @property
    def epochs_done(self) -> int:
        return len(self.result.history)

    def next_batch(self) -> tuple[Optional[torch.Tensor], ...]:
        mine = self.world.shard  # under torchrun: this rank's rows of the global batch
        x_lb, y_lb = self.data.get(self.idx_lb[mine(next(self.lb_stream))])
        if self.cfg.mode == "supervised":
            return x_lb, y_lb, None, None
        x_ulb = self.data.inputs(mine(next(self.ulb_stream)))
        if self.nets.G is None:  # a consistency mode: one unlabeled batch
            return x_lb, y_lb, x_ulb, None
        return x_lb, y_lb, x_ulb, self.data.inputs(mine(next(self.ulb2_stream)))

    def epoch_metrics(self, sums: torch.Tensor, epoch_start: float) -> Optional[dict[str, float]]:
        """Mean losses, test accuracy (EMA and raw weights), the collapse monitor, the learning rate; under
        torchrun measured on rank 0 and sent to the others."""
        return self.world.share(self.measure(sums, epoch_start) if self.world.main else None)

    def measure(self, sums: torch.Tensor, epoch_start: float) -> dict[str, float]:
        nets, K, x_test, y_test = self.nets, self.split.num_classes, self.x_test, self.y_test
        metrics = {k: v / self.steps for k, v in zip(self.keys, sums.tolist())}
        metrics["test_accuracy"] = accuracy(self.evaluated, x_test, y_test, K)
        if self.evaluated is not nets.D:  # the raw weights too, to see what the average buys
            metrics["test_accuracy_raw"] = accuracy(nets.D, x_test, y_test, K)
        if nets.G is not None:
            with torch.no_grad():
                x_fake = nets.G.eval()(self.z_probe, self.c_probe if nets.G.condition.dim else None)
            nets.G.train()
            metrics.update(collapse_metrics(nets.D, x_fake, self.x_probe, K))
        metrics["lr"] = float(nets.opt_d.param_groups[0]["lr"])
        for other in self.compared:
            metrics[ema_metric(other.decay)] = accuracy(other.model, x_test, y_test, K)
        metrics["epoch_seconds"] = time.perf_counter() - epoch_start
        return metrics

    def watch(self, epochs_done: int, metrics: Optional[dict[str, float]] = None) -> bool:
        reason = self.watchdog.verdict(metrics.get("gen_diversity") if metrics else None)
        reason, stop_requested = self.world.agree(reason)  # under torchrun: rank 0's verdict, any rank's Ctrl-C
        if stop_requested:
            raise KeyboardInterrupt
        if reason is None:
            return False
        if self.watchdog.cfg.action == "warn":
            self.result.watchdog_warnings.append(reason)
            log.warning("watchdog: %s (continuing: tricks.watchdog.action=warn)", self.watchdog.message(reason))
            self.watchdog.reset()
            return False
        self.stop_reason, self.stop_message = reason, self.watchdog.message(reason)
        return True

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        self.result.history.append(metrics)
        log.info("epoch %d/%d  %s", epoch, self.cfg.train.epochs, "  ".join(f"{k} {fmt(v)}" for k, v in metrics.items()))
        if self.on_epoch:
            self.on_epoch(epoch, metrics, self.nets.G)
        self.keeper.epoch_done(epoch, self.result.history)


@torch.no_grad()
def accuracy(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, num_classes: int) -> float:
    """Test accuracy, counted on the training device: one host sync, and on a GPU one forward
    for up to 10,000 rows, so that evaluating does not slow a graphed run (docs/results/speed.md)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch = 10_000 if device.type == "cuda" else 1000
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for i in range(0, len(x_test), batch):
        logits = model(x_test[i : i + batch].to(device, non_blocking=True))[0][:, :num_classes]
        correct += (logits.argmax(1) == y_test[i : i + batch].to(device, non_blocking=True)).sum()
    model.train(was_training)
    return correct.item() / max(len(x_test), 1)
