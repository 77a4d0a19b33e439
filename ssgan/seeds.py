"""Several seeds of one recipe trained at once, as one batched model (`fit_seeds`).

On a GPU the MNIST MLP step is bound by the number of kernels it launches, not by their size
(bench/kernels.py): a step for one seed and a step for S seeds whose every kernel is S times larger take
about the same time. `fit_seeds` stacks the S seeds' networks (`SeedStack`: each parameter gets a leading
seed dimension) and trains them with the same `d_objective` / `g_objective` as `fit`, mapped over the
seeds with `torch.func.vmap` — every matmul becomes one batched matmul. The seeds stay independent:
losses are summed over seeds, each parameter slice only receives its own seed's gradient, and Adam and
the EMA act element by element. Each seed s has its own labeled split (data.split_seed = s), its own
initialization (train.seed = s), its own batches and its own random draws.

What differs from `fit`: no torch.compile or bf16, no per-epoch sample grids or collapse monitor. The
watchdog watches each seed on its own: a seed whose D collapses (or whose loss turns NaN) is put back to
its last good epoch and held there while the other seeds train on (`HeldSeeds`); its history ends at that
epoch and its result says why (`SeedsResult.stop_reasons`). Only when every seed has stopped does training
stop. Use it for benchmarks over seeds (bench/gpu_recipe.py --seeds 0,1,2) and ensembles (ssgan/ensemble.py);
on a CPU it is no faster than one seed after another.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from ssgan.batches import BatchSource
from ssgan.config import Config
from ssgan.data import Split
from ssgan.errors import ConfigError
from ssgan.graphs import GraphedStep
from ssgan.models import frozen
from ssgan.resume import Keeper, Parts, interrupted_message
from ssgan.train import (EMA, Nets, ema_metric, Schedule, _fmt, _quiet, build_nets, check_plan, d_objective,
                         g_objective, IndexStream, resolve_device, set_matmul_precision)
from ssgan.tricks import lr_factor, make_optimizer, noise_scale, set_noise_scale
from ssgan.watchdog import Watchdog

log = logging.getLogger("ssgan")


class SeedStack(nn.Module):
    """S networks of one architecture as one module: each parameter and buffer is stacked along a
    leading seed dimension (S, ...). `member(i)` gives seed i's network back as a plain module."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(models)
        self.__dict__["base"] = copy.deepcopy(models[0])  # the architecture; not a submodule: its own weights unused
        self.names = {name.replace(".", "__"): name for name in (*params, *buffers)}
        trained = {name: p.requires_grad for name, p in models[0].named_parameters()}  # e.g. fixed weight-norm scales
        for name, p in params.items():
            self.register_parameter(name.replace(".", "__"), nn.Parameter(p, requires_grad=trained[name]))
        for name, b in buffers.items():
            self.register_buffer(name.replace(".", "__"), b)

    def __len__(self) -> int:
        return len(next(iter(self.state_dict().values())))

    def tensors(self, detach: bool = False) -> dict[str, torch.Tensor]:
        """Stacked parameters and buffers under the base module's names (detached: no gradient to them)."""
        out = {self.names[k]: v for k, v in (*self.named_parameters(), *self.named_buffers())}
        return {k: v.detach() for k, v in out.items()} if detach else out

    def train(self, mode: bool = True):
        self.base.train(mode)
        return super().train(mode)

    def member(self, i: int) -> nn.Module:
        net = copy.deepcopy(self.base)
        net.load_state_dict({k: v[i].detach().clone() for k, v in self.tensors().items()})
        return net.train(self.training)


@dataclass
class StackedNets:
    """`train.Nets` for S seeds: stacked D and G, one optimizer each over the stacked parameters."""
    D: SeedStack
    G: Optional[SeedStack]
    opt_d: torch.optim.Optimizer
    opt_g: Optional[torch.optim.Optimizer]
    num_classes: int
    fused: bool = False
    fused_g: bool = False

    def seed_view(self, d: dict[str, torch.Tensor], g: Optional[dict[str, torch.Tensor]]) -> Nets:
        """One seed's networks as `Nets`, for the objectives (called under vmap: d and g are one seed's slices)."""
        D, G = self.D.base, self.G.base if self.G is not None else None
        return Nets(D, G, None, None, self.num_classes, fused=self.fused, fused_g=self.fused_g,
                    d_forward=lambda x: functional_call(D, d, (x,)),
                    g_forward=(lambda z, c=None: functional_call(G, g, (z, c))) if G is not None else None)


def train_step(nets: StackedNets, cfg: Config, x_lb, y_lb, x_ulb=None, x_ulb2=None,
               randomness: str = "different") -> dict[str, torch.Tensor]:
    """One update of every seed's D, then of every seed's G: `train.train_step` mapped over the seeds.
    Batches are (S, B, ...); returns each loss as (S,). `randomness`: vmap's, "different" draws for each
    seed ("same": one draw shared by all, as in the tests that compare with one seed at a time)."""
    D, G = nets.D, nets.G
    # (1) Update D: each seed's d_objective; the sum over seeds gives each seed's slice its own gradient.
    d_one = lambda d, g, *batch: d_objective(nets.seed_view(d, g), cfg, *batch)  # noqa: E731
    args = (D.tensors(), G.tensors() if G else None, x_lb, y_lb, x_ulb)
    loss_d, out = vmap(d_one, in_dims=tuple(None if a is None else 0 for a in args), randomness=randomness)(*args)
    nets.opt_d.zero_grad(set_to_none=True)
    loss_d.sum().backward()
    nets.opt_d.step()
    # (2) Update G: each seed's g_objective through its fixed D (detached weights: no gradient to D).
    if G is not None:
        g_one = lambda d, g, x: g_objective(nets.seed_view(d, g), cfg, x)  # noqa: E731
        with frozen(D.base):
            loss_g, out_g = vmap(g_one, randomness=randomness)(D.tensors(detach=True), G.tensors(), x_ulb2)
        nets.opt_g.zero_grad(set_to_none=True)
        loss_g.sum().backward()
        nets.opt_g.step()
        out.update(out_g)
    return out


def stack_nets(cfg: Config, per_seed: list[Nets]) -> StackedNets:
    """Stack S seeds' freshly built networks and give them optimizers over the stacked parameters."""
    t, tricks, first = cfg.train, cfg.tricks, per_seed[0]
    D = SeedStack([n.D for n in per_seed])
    G = SeedStack([n.G for n in per_seed]) if first.G is not None else None
    opt_d = make_optimizer(D.parameters(), tricks.lr_d or t.lr, t, tricks, capturable=first.graphed)
    opt_g = make_optimizer(G.parameters(), tricks.lr_g or t.lr, t, tricks, capturable=first.graphed,
                           betas=tricks.betas_g) if G else None
    return StackedNets(D, G, opt_d, opt_g, first.num_classes, fused=first.fused, fused_g=first.fused_g)


class HeldSeeds:
    """Seeds the watchdog stopped while the others train on. Each is put back to its last good epoch and
    held there: its slices of the stacked networks and averages are written back after every epoch (and
    at the end). In between the batched step still computes them, at no extra cost, and what it computes
    is thrown away; the other seeds' slices never see it (each slice gets only its own seed's gradient)."""

    def __init__(self, modules: list[nn.Module], stopped: dict[int, dict[str, Any]]):
        self.modules = modules  # D, G, then the averages: SeedStacks
        self.stopped = stopped  # index -> {"reason", "message", "epochs"} (Parts.stopped: saved with the state)
        self.held: dict[int, list[dict[str, torch.Tensor]]] = {}
        for i in stopped:  # resumed: the saved state holds them at their last good epoch already
            self._hold(i)

    @torch.no_grad()
    def stop(self, i: int, good: list[dict[str, torch.Tensor]], reason: str, message: str, epochs: int) -> None:
        """Put seed i back to `good` (the modules' state dicts at the last good epoch) and hold it there."""
        for module, saved in zip(self.modules, good):
            for name, value in module.state_dict().items():
                value[i].copy_(saved[name][i])
        self.stopped[i] = {"reason": reason, "message": message, "epochs": epochs}
        self._hold(i)

    def _hold(self, i: int) -> None:
        self.held[i] = [{k: v[i].clone() for k, v in m.state_dict().items()} for m in self.modules]

    @torch.no_grad()
    def apply(self) -> None:
        for i, slices in self.held.items():
            for module, saved in zip(self.modules, slices):
                for name, value in module.state_dict().items():
                    value[i].copy_(saved[name])

    def __contains__(self, i: int) -> bool:
        return i in self.stopped


@dataclass
class SeedsResult:
    seeds: list[int]
    classifiers: list[nn.Module]  # per seed: the EMA discriminator (or the raw one), in eval mode
    generators: list[Optional[nn.Module]]
    histories: list[list[dict[str, float]]] = field(default_factory=list)  # per seed, per epoch it finished
    stop_reason: str = "completed"  # the loop's: completed, interrupted, or the watchdog's when no seed was left
    stop_message: str = ""
    stop_reasons: list[str] = field(default_factory=list)  # per seed: the loop's, or the watchdog's for a seed it stopped
    stop_messages: list[str] = field(default_factory=list)
    watchdog_warnings: list[list[str]] = field(default_factory=list)  # per seed (tricks.watchdog.action=warn)
    epochs_done: int = 0  # epochs the loop finished; a seed the watchdog stopped has len(histories[i]) of them
    seconds: float = 0.0
    cuda_graph: str = "off"


# on_epoch(epoch, metrics per seed): a seed the watchdog has stopped gets None
SeedsCallback = Callable[[int, list[Optional[dict[str, float]]]], None]


def fit_seeds(cfg: Config, splits: list[Split], seeds: list[int], on_epoch: Optional[SeedsCallback] = None,
              progress: Optional[bool] = None, resume: Optional[dict[str, Any]] = None,
              on_state: Optional[Callable[[dict[str, Any]], None]] = None) -> SeedsResult:
    """Train `cfg` once per seed, all seeds at once; `splits[i]` is seed i's split (data.split_seed = seeds[i]).
    `on_epoch(epoch, metrics per seed)` is called after every epoch (None for a seed the watchdog has
    stopped). `on_state` and `resume`: as `fit`'s (ssgan/resume.py), for all seeds together."""
    t, tricks = cfg.train, cfg.tricks
    check_seeds(cfg, splits, seeds)
    device = resolve_device(t.device)
    K = splits[0].num_classes
    data = BatchSource(splits[0].x_train, splits[0].y_train, device, t.data_on_device)  # the shared unlabeled pool
    index_device = data.device if data.resident else None
    chunk = 1 << 16 if index_device is not None and index_device.type != "cpu" else 0
    # each seed: its own init (as `fit` with train.seed = s), labeled set and batch order
    per_seed, lb_streams, ulb_streams, ulb2_streams = [], [], [], []
    for s, split in zip(seeds, splits):
        torch.manual_seed(s)
        init_idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(s))[:500]
        per_seed.append(build_nets(cfg, split.input_shape, K, device, x_init=data.inputs(init_idx)))
        lb_streams.append(IndexStream(len(split.labeled_idx), t.batch_size, torch.Generator().manual_seed(s),
                                       index_device, chunk))
        ulb_streams.append(IndexStream(len(data), t.batch_size, torch.Generator().manual_seed(s + 1), index_device, chunk))
        ulb2_streams.append(IndexStream(len(data), t.batch_size, torch.Generator().manual_seed(s + 2), index_device, chunk))
    x_lb_all = torch.stack([s.x_train[s.labeled_idx] for s in splits]).to(device)  # (S, L, *input_shape)
    y_lb_all = torch.stack([s.y_train[s.labeled_idx] for s in splits]).to(device)  # (S, L)
    rows = torch.arange(len(seeds), device=device).unsqueeze(1)  # (S, 1): picks each seed's own labeled rows
    nets = stack_nets(cfg, per_seed)
    set_matmul_precision(cfg)
    D, G, graphed = nets.D, nets.G, per_seed[0].graphed
    del per_seed
    ema = EMA(D, t.ema_decay) if t.ema_decay > 0 else None
    evaluated = ema.model if ema else D
    compared = [EMA(D, d) for d in t.ema_compare]  # further averages, evaluated only (train.ema_compare)
    steps, total = check_plan(cfg, splits[0])
    schedule = Schedule([o for o in (nets.opt_d, nets.opt_g) if o is not None], lambda s: lr_factor(t, tricks, s, total))
    watchdog = Watchdog(tricks.watchdog, device, adversarial=G is not None, seeds=len(seeds))
    check_every = min(tricks.watchdog.patience, 50)
    keys: list[str] = []
    sums = torch.zeros(0, device=device)  # (losses, S) per-epoch sums, on the device

    def step(*batch: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        nonlocal sums
        losses = train_step(nets, cfg, *batch)
        stacked = torch.stack([v.float() for v in losses.values()])  # (losses, S)
        watchdog.observe(losses, stacked)  # a counter per seed
        if keys:
            sums.add_(stacked)
        else:
            keys.extend(losses)
            sums = stacked.clone()
        return losses

    run_step = GraphedStep(step) if graphed else step
    result = SeedsResult(seeds=list(seeds), classifiers=[], generators=[], histories=[[] for _ in seeds],
                         watchdog_warnings=[[] for _ in seeds])
    parts = Parts(nets, ([ema] if ema else []) + compared, schedule, [*lb_streams, *ulb_streams, *ulb2_streams],
                  watchdog, device)
    D.train()
    set_noise_scale(D.base, noise_scale(tricks, 0, total))
    if G is not None:
        G.train()
    if resume is not None:
        result.histories = [list(h) for h in resume["history"]]
        result.epochs_done = resume["epoch"]
        log.info("resuming after epoch %d of %d", result.epochs_done, t.epochs)
    keeper = Keeper(parts, cfg, seeds_id(seeds, splits), result.epochs_done, result.histories, resume, on_state)
    held = HeldSeeds([D, *([G] if G is not None else []), *(e.model for e in parts.emas)], parts.stopped)

    def check(epochs: int) -> bool:
        """Stop and hold the seeds the watchdog names (their last good epoch: `epochs`); True when none is left."""
        for i, reason in enumerate(watchdog.verdicts()):
            if reason is None or i in held:
                continue
            if tricks.watchdog.action == "warn":
                result.watchdog_warnings[i].append(reason)
                log.warning("watchdog, seed %d: %s (continuing: tricks.watchdog.action=warn)", seeds[i],
                            watchdog.message(reason))
                watchdog.reset(i)
                continue
            good = [keeper.good["D"], *([keeper.good["G"]] if G is not None else []),
                    *(e["model"] for e in keeper.good["emas"])]
            held.stop(i, good, reason, watchdog.message(reason), epochs)
            left = len(seeds) - len(held.stopped)
            log.warning("watchdog stopped seed %d after %d good epoch(s): %s%s", seeds[i], epochs,
                        watchdog.message(reason), f"; the other {left} seed(s) go on" if left else "")
        if len(held.stopped) < len(seeds):
            return False
        last = max(held.stopped.values(), key=lambda why: why["epochs"])
        result.stop_reason, result.stop_message = last["reason"], last["message"]
        return True

    try:
        for epoch in range(result.epochs_done + 1, t.epochs + 1):
            epoch_start = time.perf_counter()
            sums.zero_()
            for i in tqdm(range(steps), desc=f"epoch {epoch}/{t.epochs}", disable=_quiet(progress), leave=False):
                idx_lb = torch.stack([next(s) for s in lb_streams])  # (S, B)
                x_ulb = x_ulb2 = None
                if G is not None:
                    x_ulb = data.inputs(torch.stack([next(s) for s in ulb_streams]))  # (S, B, *input_shape)
                    x_ulb2 = data.inputs(torch.stack([next(s) for s in ulb2_streams]))
                if tricks.noise_anneal:
                    set_noise_scale(D.base, noise_scale(tricks, (epoch - 1) * steps + i, total))
                run_step(x_lb_all[rows, idx_lb], y_lb_all[rows, idx_lb], x_ulb, x_ulb2)
                schedule.step()
                if ema:
                    ema.update(D)
                for other in compared:
                    other.update(D)
                if (i + 1) % check_every == 0 and check(epoch - 1):
                    break
            if result.stop_reason != "completed":
                break
            held.apply()
            per_seed_losses = (sums / steps).t().tolist()  # (S, losses): one host sync
            acc = _accuracy(evaluated, splits[0].x_test, splits[0].y_test, K)
            acc_raw = _accuracy(D, splits[0].x_test, splits[0].y_test, K) if ema else acc
            lr = float(nets.opt_d.param_groups[0]["lr"])
            seconds = time.perf_counter() - epoch_start
            metrics = [{**dict(zip(keys, losses)), "test_accuracy": a, "test_accuracy_raw": r, "lr": lr,
                        "epoch_seconds": seconds} for losses, a, r in zip(per_seed_losses, acc, acc_raw)]
            for other in compared:
                for m, a in zip(metrics, _accuracy(other.model, splits[0].x_test, splits[0].y_test, K)):
                    m[ema_metric(other.decay)] = a
            if check(epoch - 1):
                break
            metrics = [None if i in held else m for i, m in enumerate(metrics)]
            for h, m in zip(result.histories, metrics):
                if m is not None:
                    h.append(m)
            result.epochs_done = epoch
            log.info("epoch %d/%d  test_accuracy %s  (%.1f s)", epoch, t.epochs,
                     " ".join("stopped" if m is None else _fmt(a) for a, m in zip(acc, metrics)), seconds)
            if on_epoch:
                on_epoch(epoch, metrics)
            keeper.epoch_done(epoch, result.histories)
    except KeyboardInterrupt:
        result.stop_reason, result.stop_message = "interrupted", "interrupted by the user"
        log.warning("interrupted: %s", interrupted_message(result.epochs_done, keeper.good["epoch"]))
    stopped = dict(held.stopped)  # a rollback restores the last good epoch's record, which may know fewer
    if keeper.stop(result.stop_reason):
        log.warning("watchdog stopped training: no seed left")
        held.stopped.update(stopped)
    held.apply()  # after a rollback, or a Ctrl-C inside an epoch
    result.stop_reasons = [held.stopped[i]["reason"] if i in held else result.stop_reason for i in range(len(seeds))]
    result.stop_messages = [held.stopped[i]["message"] if i in held else result.stop_message for i in range(len(seeds))]
    result.seconds = keeper.seconds()
    if isinstance(run_step, GraphedStep):
        result.cuda_graph = "on" if run_step.captured else f"failed: {run_step.failure}" if run_step.failure else "off"
    evaluated.eval()
    result.classifiers = [evaluated.member(i).eval() for i in range(len(seeds))]
    result.generators = [G.member(i).eval() if G else None for i in range(len(seeds))]
    return result


def check_seeds(cfg: Config, splits: list[Split], seeds: list[int]) -> None:
    """Seeds and splits that can be trained at once (called by fit_seeds; before any run is opened by the CLI)."""
    if not seeds or len(seeds) != len(splits) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"fit_seeds needs one split per seed and distinct seeds, got seeds {list(seeds)} "
                          f"and {len(splits)} split(s)")
    if cfg.train.compile:
        raise ConfigError("train.compile does not apply to several seeds at once; set train.compile=false")
    if cfg.train.precision == "bf16":  # vmap's batch norm rule rejects bf16 inputs with fp32 weights
        raise ConfigError("train.precision=bf16 does not apply to several seeds at once; use fp32 or tf32")
    first = splits[0]
    for s, split in zip(seeds, splits):
        if (split.x_train.shape != first.x_train.shape or len(split.labeled_idx) != len(first.labeled_idx)
                or not torch.equal(split.x_train, first.x_train) or not torch.equal(split.x_test, first.x_test)):
            raise ConfigError(f"seed {s}'s split differs in size from seed {seeds[0]}'s: the seeds must share one "
                              "dataset and label budget (only data.split_seed may differ)")


@torch.no_grad()
def _accuracy(model: SeedStack, x_test: torch.Tensor, y_test: torch.Tensor, num_classes: int) -> list[float]:
    """Each seed's test accuracy, counted on the device: one host sync."""
    was_training = model.training
    model.eval()
    w = model.tensors()
    device = next(iter(w.values())).device
    batch = 10_000 if device.type == "cuda" else 1000
    correct = torch.zeros(len(model), dtype=torch.int64, device=device)
    predict = vmap(lambda p, x: functional_call(model.base, p, (x,))[0][:, :num_classes].argmax(1), in_dims=(0, None))
    for i in range(0, len(x_test), batch):
        y = y_test[i : i + batch].to(device)
        correct += (predict(w, x_test[i : i + batch].to(device)) == y).sum(1)  # (S,)
    model.train(was_training)
    return (correct.double() / max(len(x_test), 1)).tolist()


def seeds_id(seeds: list[int], splits: list[Split]) -> str:
    """Which seeds on which labeled data: what a saved state of several seeds must match to resume."""
    return ",".join(f"{s}:{split.split_hash}" for s, split in zip(seeds, splits))
