"""Several seeds of one recipe trained at once, as one batched model (`fit_seeds`).

On a GPU the MNIST MLP step is bound by the number of kernels it launches, not by their size
(bench/kernels.py): a step for one seed and a step for S seeds whose every kernel is S times larger take
about the same time. `fit_seeds` stacks the S seeds' networks (`SeedStack`: each parameter gets a leading
seed dimension) and trains them with the same `d_objective` / `g_objective` as `fit`, mapped over the
seeds with `torch.func.vmap` — every matmul becomes one batched matmul. The seeds stay independent:
losses are summed over seeds, each parameter slice only receives its own seed's gradient, and Adam and
the EMA act element by element. Each seed s has its own labeled split (data.split_seed = s), its own
initialization (train.seed = s), its own batches and its own random draws.

Both run through the one epoch loop (ssgan/training/loop.py); what differs from `fit`: no torch.compile or
bf16. The collapse monitor and `on_epoch`'s generators (sample grids) are per seed. The watchdog watches each seed on its own: a seed whose D collapses (or whose loss turns NaN) is put back to
its last good epoch and held there while the other seeds train on (`HeldSeeds`); its history ends at that
epoch and its result says why (`SeedsResult.stop_reasons`). Only when every seed has stopped does training
stop. Use it for benchmarks over seeds (bench/gpu_recipe.py --seeds 0,1,2) and ensembles (ssgan/tracking/run.py);
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

from ssgan.config import Config
from ssgan.data.splits import Split
from ssgan.errors import ConfigError
from ssgan.nets.models import frozen
from ssgan.training.resume import Keeper, Parts
from ssgan.nets.monitor import collapse_metrics
from ssgan.training.batches import BatchSource, index_streams
from ssgan.training.ema import EMA, ema_metric
from ssgan.training.loop import EpochLoop, fmt
from ssgan.training.step import Nets, build_nets, check_plan, d_objective, g_objective, resolve_device, set_matmul_precision
from ssgan.training.tricks import make_optimizer
from ssgan.training.watchdog import Watchdog

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


STACKABLE = ("ssgan", "supervised")  # the modes whose seeds train at once as one batched model

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
    ramp: None = None  # the consistency modes train one seed at a time (`check_seeds`)

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


# on_epoch(epoch, metrics per seed, generators): a seed the watchdog has stopped gets None; `generators[i]` is
# seed i's generator as a plain module (made when asked for; None in supervised mode)
SeedsCallback = Callable[[int, list[Optional[dict[str, float]]], "Members"], None]


class Members:
    """Seed i's network of a SeedStack as a plain module, in eval mode, made only when asked for (`[i]`)."""

    def __init__(self, stack: Optional[SeedStack]):
        self.stack = stack

    def __getitem__(self, i: int) -> Optional[nn.Module]:
        return self.stack.member(i).eval() if self.stack is not None else None


def fit_seeds(cfg: Config, splits: list[Split], seeds: list[int], on_epoch: Optional[SeedsCallback] = None,
              progress: Optional[bool] = None, resume: Optional[dict[str, Any]] = None,
              on_state: Optional[Callable[[dict[str, Any]], None]] = None) -> SeedsResult:
    """Train `cfg` once per seed, all seeds at once; `splits[i]` is seed i's split (data.split_seed = seeds[i]).
    `on_epoch(epoch, metrics per seed, generators)` is called after every epoch (metrics None for a seed the
    watchdog has stopped). `on_state` and `resume`: as `fit`'s (ssgan/training/resume.py), for all seeds together."""
    run = SeedsLoop(cfg, splits, seeds, on_epoch, resume, on_state)
    held, result = run.held, run.result
    stopped = dict(held.stopped)  # a rollback restores the last good epoch's record, which may know fewer
    if run.run(progress):
        log.warning("watchdog stopped training: no seed left")
        held.stopped.update(stopped)
    held.apply()  # after a rollback, or a Ctrl-C inside an epoch
    result.stop_reason, result.stop_message = run.stop_reason, run.stop_message
    result.stop_reasons = [held.stopped[i]["reason"] if i in held else run.stop_reason for i in range(len(seeds))]
    result.stop_messages = [held.stopped[i]["message"] if i in held else run.stop_message for i in range(len(seeds))]
    result.seconds, result.cuda_graph = run.keeper.seconds(), run.cuda_graph()
    run.evaluated.eval()
    result.classifiers = [run.evaluated.member(i).eval() for i in range(len(seeds))]
    result.generators = [Members(run.nets.G)[i] for i in range(len(seeds))]
    return result


class SeedsLoop(EpochLoop):
    """S seeds' networks stacked into one (`StackedNets`), each seed with its own split, init and batches."""

    def __init__(self, cfg: Config, splits: list[Split], seeds: list[int], on_epoch: Optional[SeedsCallback],
                 resume: Optional[dict[str, Any]], on_state: Optional[Callable[[dict[str, Any]], None]]):
        t = cfg.train
        check_seeds(cfg, splits, seeds)
        device = resolve_device(t.device)
        self.seeds, self.splits, self.on_epoch, K = list(seeds), splits, on_epoch, splits[0].num_classes
        self.data = data = BatchSource(splits[0].x_train, splits[0].y_train, device, t.data_on_device)  # shared pool
        # each seed: its own init (as `fit` with train.seed = s), labeled set, batch order and collapse probes
        per_seed, self.lb_streams, self.ulb_streams, self.ulb2_streams, probes = [], [], [], [], []
        for s, split in zip(seeds, splits):
            torch.manual_seed(s)
            init_idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(s))[:500]
            x_init = data.inputs(init_idx)
            per_seed.append(build_nets(cfg, split.input_shape, K, device, x_init=x_init))
            lb, ulb, ulb2 = index_streams(len(split.labeled_idx), data, t.batch_size, s)
            self.lb_streams.append(lb)
            self.ulb_streams.append(ulb)
            self.ulb2_streams.append(ulb2)
            z = torch.rand(256, cfg.model.noise_dim, generator=torch.Generator().manual_seed(s)).to(device)
            probes.append((x_init[:256], z))  # what `fit` with train.seed = s monitors
        self.probes = probes
        self.c_probe = torch.arange(256, device=device) % K  # every class equally, for a conditional G
        self.x_lb_all = torch.stack([s.x_train[s.labeled_idx] for s in splits]).to(device)  # (S, L, *input_shape)
        self.y_lb_all = torch.stack([s.y_train[s.labeled_idx] for s in splits]).to(device)  # (S, L)
        self.rows = torch.arange(len(seeds), device=device).unsqueeze(1)  # (S, 1): picks each seed's own labeled rows
        nets = stack_nets(cfg, per_seed)
        set_matmul_precision(cfg)
        graphed = per_seed[0].graphed
        del per_seed
        ema = EMA(nets.D, t.ema_decay) if t.ema_decay > 0 else None
        self.evaluated = ema.model if ema else nets.D
        self.compared = [EMA(nets.D, d) for d in t.ema_compare]  # further averages, evaluated only (train.ema_compare)
        steps, total = check_plan(cfg, splits[0])
        watchdog = Watchdog(cfg.tricks.watchdog, device, adversarial=nets.G is not None, seeds=len(seeds))
        emas = ([ema] if ema else []) + self.compared
        super().__init__(cfg, train_step, nets, emas, nets.D.base, watchdog, steps, total, graphed, device)
        self.result = SeedsResult(seeds=list(seeds), classifiers=[], generators=[], histories=[[] for _ in seeds],
                                  watchdog_warnings=[[] for _ in seeds])
        parts = Parts(nets, emas, self.schedule, [*self.lb_streams, *self.ulb_streams, *self.ulb2_streams],
                      watchdog, device)
        if resume is not None:
            self.result.histories = [list(h) for h in resume["history"]]
            self.result.epochs_done = resume["epoch"]
            log.info("resuming after epoch %d of %d", self.result.epochs_done, t.epochs)
        self.keeper = Keeper(parts, cfg, seeds_id(seeds, splits), self.epochs_done, self.result.histories, resume,
                             on_state)
        G = nets.G
        self.held = HeldSeeds([nets.D, *([G] if G is not None else []), *(e.model for e in parts.emas)], parts.stopped)

    @property
    def epochs_done(self) -> int:
        return self.result.epochs_done

    def next_batch(self) -> tuple[Optional[torch.Tensor], ...]:
        idx_lb = torch.stack([next(s) for s in self.lb_streams])  # (S, B)
        x_ulb = x_ulb2 = None
        if self.nets.G is not None:
            x_ulb = self.data.inputs(torch.stack([next(s) for s in self.ulb_streams]))  # (S, B, *input_shape)
            x_ulb2 = self.data.inputs(torch.stack([next(s) for s in self.ulb2_streams]))
        return self.x_lb_all[self.rows, idx_lb], self.y_lb_all[self.rows, idx_lb], x_ulb, x_ulb2

    def epoch_metrics(self, sums: torch.Tensor, epoch_start: float) -> list[dict[str, float]]:
        """Per seed: mean losses, test accuracy (EMA and raw weights), the collapse monitor, the learning rate."""
        self.held.apply()
        D, G, split, K = self.nets.D, self.nets.G, self.splits[0], self.splits[0].num_classes
        per_seed_losses = (sums / self.steps).t().tolist()  # (S, losses): one host sync
        acc = accuracies(self.evaluated, split.x_test, split.y_test, K)
        acc_raw = accuracies(D, split.x_test, split.y_test, K) if self.evaluated is not D else acc
        lr = float(self.nets.opt_d.param_groups[0]["lr"])
        metrics = [{**dict(zip(self.keys, losses)), "test_accuracy": a, "test_accuracy_raw": r}
                   for losses, a, r in zip(per_seed_losses, acc, acc_raw)]
        if G is not None:  # the collapse monitor, seed by seed, as `fit` computes it
            for i, m in enumerate(metrics):
                if i not in self.held:
                    x_probe, z_probe = self.probes[i]
                    G_i = G.member(i).eval()
                    with torch.no_grad():
                        x_fake = G_i(z_probe, self.c_probe if G_i.condition.dim else None)
                    m.update(collapse_metrics(D.member(i), x_fake, x_probe, K))
        for m in metrics:
            m["lr"] = lr
        for other in self.compared:
            for m, a in zip(metrics, accuracies(other.model, split.x_test, split.y_test, K)):
                m[ema_metric(other.decay)] = a
        seconds = time.perf_counter() - epoch_start
        for m in metrics:
            m["epoch_seconds"] = seconds
        return metrics

    def watch(self, epochs_done: int, metrics: Optional[list[dict[str, float]]] = None) -> bool:
        """Stop and hold the seeds the watchdog names (their last good epoch: `epochs_done`); True when none is left."""
        seeds, held, watchdog, G = self.seeds, self.held, self.watchdog, self.nets.G
        diversity = [m.get("gen_diversity") for m in metrics] if metrics else None
        for i, reason in enumerate(watchdog.verdicts(diversity)):
            if reason is None or i in held:
                continue
            if watchdog.cfg.action == "warn":
                self.result.watchdog_warnings[i].append(reason)
                log.warning("watchdog, seed %d: %s (continuing: tricks.watchdog.action=warn)", seeds[i],
                            watchdog.message(reason))
                watchdog.reset(i)
                continue
            good = self.keeper.good
            held.stop(i, [good["D"], *([good["G"]] if G is not None else []), *(e["model"] for e in good["emas"])],
                      reason, watchdog.message(reason), epochs_done)
            left = len(seeds) - len(held.stopped)
            log.warning("watchdog stopped seed %d after %d good epoch(s): %s%s", seeds[i], epochs_done,
                        watchdog.message(reason), f"; the other {left} seed(s) go on" if left else "")
        if len(held.stopped) < len(seeds):
            return False
        last = max(held.stopped.values(), key=lambda why: why["epochs"])
        self.stop_reason, self.stop_message = last["reason"], last["message"]
        return True

    def epoch_done(self, epoch: int, metrics: list[dict[str, float]]) -> None:
        kept = [None if i in self.held else m for i, m in enumerate(metrics)]
        for h, m in zip(self.result.histories, kept):
            if m is not None:
                h.append(m)
        self.result.epochs_done = epoch
        log.info("epoch %d/%d  test_accuracy %s  (%.1f s)", epoch, self.cfg.train.epochs,
                 " ".join("stopped" if m is None else fmt(m["test_accuracy"]) for m in kept), metrics[0]["epoch_seconds"])
        if self.on_epoch:
            self.on_epoch(epoch, kept, Members(self.nets.G))
        self.keeper.epoch_done(epoch, self.result.histories)


def check_seeds(cfg: Config, splits: list[Split], seeds: list[int]) -> None:
    """Seeds and splits that can be trained at once (called by fit_seeds; before any run is opened by the CLI)."""
    if not seeds or len(seeds) != len(splits) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"fit_seeds needs one split per seed and distinct seeds, got seeds {list(seeds)} "
                          f"and {len(splits)} split(s)")
    if cfg.mode not in STACKABLE:
        raise ConfigError(f"mode={cfg.mode} trains one seed at a time: several seeds at once (--seeds, --members, "
                          "compare --seeds-at-once) are for ssgan and supervised")
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
def accuracies(model: SeedStack, x_test: torch.Tensor, y_test: torch.Tensor, num_classes: int) -> list[float]:
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


SEED_STRIDE = 1000  # an ensemble's member m trains with seed: split seed + SEED_STRIDE * m


def member_seeds(split_seed: int, members: int) -> list[int]:
    """The training seeds of an ensemble's members (ssgan/tracking/ensemble.py); the first is the split seed
    (the plain run's)."""
    if members < 1:
        raise ConfigError(f"an ensemble needs at least 1 member, got {members}")
    return [split_seed + SEED_STRIDE * m for m in range(members)]
