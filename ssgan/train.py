"""The training loop: one `train_step` with the D update and the G update written out.

mode=ssgan      D minimizes L_sup(x_lb) + unsup_weight * L_unsup(x_ulb, G(z)); G matches D's features.
mode=supervised the same D, optimizer and schedule on the labeled subset alone (no generator).

Both modes take the same number of steps per epoch (one pass over the unlabeled pool) and draw the
same labeled batches for the same seed, so the supervised run is the baseline for exactly this split.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from ssgan.batches import BatchSource
from ssgan.config import Config
from ssgan.data import Split
from ssgan.errors import ConfigError
from ssgan.graphs import GraphedStep, use_cuda_graph
from ssgan.losses import (conditional_entropy, feature_matching_loss, non_saturating_loss, real_fake_loss, real_logit,
                          supervised_loss)
from ssgan.models import (build_discriminator, build_generator, check_tricks_apply, frozen, has_batch_norm,
                          init_from_data, sample_noise)
from ssgan.monitor import collapse_metrics
from ssgan.resume import Keeper, Parts, interrupted_message
from ssgan.tricks import lr_factor, make_optimizer, noise_scale, real_fake_targets, set_lr, set_noise_scale
from ssgan.watchdog import Watchdog

log = logging.getLogger("ssgan")


@dataclass
class Nets:
    D: nn.Module
    G: Optional[nn.Module]  # None in supervised mode
    opt_d: torch.optim.Optimizer
    opt_g: Optional[torch.optim.Optimizer]
    num_classes: int
    fused: bool = False  # D's update in one forward (train.fused_d, and D has no batch norm)
    fused_g: bool = False  # G's feature matching: real and generated rows in one forward of D (train.fused_g)
    graphed: bool = False  # the step is replayed as a CUDA graph (train.cuda_graph, ssgan/graphs.py)
    d_forward: Optional[Callable] = None  # D or torch.compile(D) (see `prepare`); the modules stay as they are
    g_forward: Optional[Callable] = None

    def __post_init__(self):
        self.d_forward = self.d_forward or self.D
        self.g_forward = self.g_forward or self.G


@dataclass
class TrainResult:
    classifier: nn.Module  # the EMA discriminator (or the raw one when ema_decay = 0), in eval mode
    generator: Optional[nn.Module]
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "completed"  # completed | interrupted | d_loss_collapse | non_finite_loss | mode_collapse
    stop_message: str = ""
    watchdog_warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cuda_graph: str = "off"  # off | on | failed: <reason> (train.cuda_graph, ssgan/graphs.py)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA GPU is available; use train.device=cpu or auto")
    return torch.device(name)


def check_plan(cfg: Config, split: Split) -> tuple[int, int]:
    """Checks that need the data: switches that do not apply to the model, a warm-up longer than
    training. Returns (steps per epoch, total steps). Called before an MLflow run is opened."""
    check_tricks_apply(cfg.model, cfg.tricks)
    steps = cfg.train.steps_per_epoch or max(1, len(split.x_train) // cfg.train.batch_size)
    total = steps * cfg.train.epochs
    if cfg.tricks.warmup_steps > total:
        raise ConfigError(f"tricks.warmup_steps={cfg.tricks.warmup_steps} is longer than training ({total} steps); "
                          "lower it or train longer")
    return steps, total


def build_nets(cfg: Config, input_shape: tuple[int, ...], num_classes: int, device: torch.device,
               x_init: Optional[torch.Tensor] = None) -> Nets:
    """D (and G in ssgan mode) with their optimizers; `x_init` is a batch of training inputs for the
    data-dependent init of weight-normed layers (Salimans & Kingma 2016)."""
    t, tricks = cfg.train, cfg.tricks
    graphed = use_cuda_graph(cfg, device)
    D = build_discriminator(cfg.model, input_shape, num_classes, tricks).to(device)
    if cfg.model.data_init and x_init is not None:
        init_from_data(D, x_init)
    set_noise_scale(D, noise_scale(tricks, 0, 1))  # Gaussian noise on or off per tricks.gaussian_noise
    opt_d = make_optimizer(D.parameters(), tricks.lr_d or t.lr, t, tricks, capturable=graphed)
    G, opt_g = None, None
    if cfg.mode == "ssgan":
        G = build_generator(cfg.model, input_shape, cfg.data.scale, tricks, num_classes).to(device)
        opt_g = make_optimizer(G.parameters(), tricks.lr_g or t.lr, t, tricks, capturable=graphed,
                               betas=tricks.betas_g)
    fused = t.fused_d and not has_batch_norm(D)
    # G's fused forward saves a whole forward of D (kernels: what a GPU step is bound by) but computes
    # input gradients for the real rows too (FLOPs: what a CPU step is bound by), so null = on a GPU only.
    fused_g = fused and (t.fused_g if t.fused_g is not None else device.type == "cuda")
    return Nets(D, G, opt_d, opt_g, num_classes, fused=fused, fused_g=fused_g, graphed=graphed)


def prepare(nets: Nets, cfg: Config) -> Nets:
    """Speed switches that leave the maths alone: torch.compile (train.compile) and, for conv models on
    CUDA, channels_last memory layout and cuDNN autotuning."""
    device = next(nets.D.parameters()).device
    set_matmul_precision(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if cfg.model.arch == "conv":
            for net in (nets.D, nets.G):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
    if cfg.train.compile:
        nets.d_forward = torch.compile(nets.D)
        nets.g_forward = torch.compile(nets.G) if nets.G is not None else None
    return nets


def set_matmul_precision(cfg: Config) -> None:
    """train.precision=tf32: CUDA matmuls of fp32 tensors on TF32 tensor cores (10-bit mantissa); otherwise
    full fp32 matmuls (PyTorch's default). A process-wide switch, set by every run."""
    torch.backends.cuda.matmul.allow_tf32 = cfg.train.precision == "tf32"


def _autocast(cfg: Config, device: torch.device):
    """bfloat16 autocast for the forwards when train.precision=bf16 (a no-op context otherwise). Its
    cache of cast weights is off while a CUDA graph is being captured (the graph must recast them)."""
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16",
                          cache_enabled=not capturing)


def train_step(nets: Nets, cfg: Config, x_lb, y_lb, x_ulb=None, x_ulb2=None) -> dict[str, torch.Tensor]:
    """One update of D, then (ssgan mode) one update of G. Returns detached losses (no host sync)."""
    # (1) Update D: minimize -log p(y | x_lb, real) + unsup_weight * [-log D(x_ulb) - log(1 - D(G(z)))]
    #     (+ the optional terms listed in `d_objective`).
    loss_d, out = d_objective(nets, cfg, x_lb, y_lb, x_ulb)
    nets.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    nets.opt_d.step()

    # (2) Update G: minimize || E f(x_ulb2) - E f(G(z)) ||^2, feature matching (or -log D(G(z)); `g_objective`).
    #     D is a fixed function here (`frozen`): gradients flow through it to G, none are computed for it.
    if nets.G is not None:
        with frozen(nets.D):
            loss_g, out_g = g_objective(nets, cfg, x_ulb2)
        nets.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        nets.opt_g.step()
        out.update(out_g)
    return out


def d_objective(nets: Nets, cfg: Config, x_lb, y_lb, x_ulb=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """D's loss on one batch, and its parts (detached):

        L_sup = -log p(y | x_lb, real)                                              [supervised]
        + unsup_weight * L_unsup, L_unsup = -log D(x_ulb) - log(1 - D(G(z)))         [ssgan only]
        + cond_weight * -log p(c | G(z, c), real)      [conditional G only: AC-GAN, Odena et al. 2017]
        + entropy_weight * H(p(y | x_ulb))                                            [tricks.entropy_weight]
    """
    D, G, K = nets.d_forward, nets.g_forward, nets.num_classes
    device = x_lb.device
    with _autocast(cfg, device):  # forwards in bf16 when asked; every loss below is computed in fp32
        if G is None:
            logits_lb = D(x_lb)[0].float()  # (B, K[+1])
        else:
            c_fake = _fake_classes(nets.G, len(x_ulb), K, device)  # (B,) class conditions, or None
            with torch.no_grad():  # no gradient into G from D's update
                x_fake = G(sample_noise(len(x_ulb), nets.G.noise_dim, device), c_fake)  # (B, *input_shape)
            if nets.fused:  # one forward over all rows: each weight is read once
                logits = D(torch.cat([x_lb, x_ulb, x_fake.to(x_lb.dtype)]))[0].float()
                logits_lb, logits_gan = logits.split([len(x_lb), len(x_ulb) + len(x_fake)])
                logits_ulb, logits_fake = logits_gan.split([len(x_ulb), len(x_fake)])
                r_ulb, r_fake = real_logit(logits_gan, K).split([len(x_ulb), len(x_fake)])  # one logsumexp for both
            else:  # D with batch norm: each batch normalized by its own statistics
                logits_lb, logits_ulb, logits_fake = (D(x)[0].float() for x in (x_lb, x_ulb, x_fake))
                r_ulb, r_fake = real_logit(logits_ulb, K), real_logit(logits_fake, K)
    loss_sup = supervised_loss(logits_lb, y_lb, K)
    loss_d = loss_sup
    out = {"loss_sup": loss_sup.detach()}
    if G is not None:
        # "is real" targets: 1 and 0, or smoothed / flipped (tricks); never used in G's update below
        t_ulb, t_fake = real_fake_targets(len(x_ulb), len(x_fake), cfg.tricks, x_ulb.device)
        loss_unsup = real_fake_loss(r_ulb, r_fake, t_ulb, t_fake)  # = unsupervised_loss(logits_ulb, logits_fake, ...)
        loss_d = loss_sup + cfg.train.unsup_weight * loss_unsup
        out["loss_unsup"] = loss_unsup.detach()
        if cfg.tricks.entropy_weight:  # + entropy_weight * H(p(y | x_ulb)): confident predictions on unlabeled data
            loss_ent = conditional_entropy(logits_ulb, K)
            loss_d = loss_d + cfg.tricks.entropy_weight * loss_ent
            out["loss_entropy"] = loss_ent.detach()
        if c_fake is not None:
            loss_cond = supervised_loss(logits_fake, c_fake, K)
            loss_d = loss_d + cfg.tricks.cond_weight * loss_cond
            out["loss_cond_d"] = loss_cond.detach()
    out["loss_d"] = loss_d.detach()
    out["train_acc_lb"] = (logits_lb[:, :K].argmax(1) == y_lb).float().mean().detach()
    return loss_d, out


def g_objective(nets: Nets, cfg: Config, x_ulb2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's loss on one batch: feature matching, || E f(x_ulb2) - E f(G(z)) ||^2 (Salimans et al. sec. 3.1),
    or non-saturating, -log D(G(z)); a conditional G also minimizes -log p(c | G(z, c), real)."""
    D, G, K = nets.d_forward, nets.g_forward, nets.num_classes
    device = x_ulb2.device
    c_fake = _fake_classes(nets.G, len(x_ulb2), K, device)
    with _autocast(cfg, device):
        x_fake = G(sample_noise(len(x_ulb2), nets.G.noise_dim, device), c_fake)
        if cfg.train.gen_loss == "feature_matching":
            if nets.fused_g:  # one forward over real and generated rows; the real rows' features are constants
                logits, feats = D(torch.cat([x_ulb2, x_fake.to(x_ulb2.dtype)]))
                logits_fake = logits[len(x_ulb2):]
                feat_real, feat_fake = feats[: len(x_ulb2)].detach(), feats[len(x_ulb2):]
            else:
                logits_fake, feat_fake = D(x_fake)
                with torch.no_grad():
                    _, feat_real = D(x_ulb2)
            loss_g = feature_matching_loss(feat_real.float(), feat_fake.float())
        else:
            logits_fake, feat_fake = D(x_fake)
            loss_g = non_saturating_loss(logits_fake.float(), K)
        if c_fake is not None:
            loss_g = loss_g + cfg.tricks.cond_weight * supervised_loss(logits_fake.float(), c_fake, K)
    return loss_g, {"loss_g": loss_g.detach()}


def _fake_classes(G: nn.Module, n: int, num_classes: int, device: torch.device) -> Optional[torch.Tensor]:
    """Uniformly drawn class conditions for a conditional generator; None for an unconditional one."""
    return torch.randint(num_classes, (n,), device=device) if G.condition.dim else None


def ema_metric(decay: float) -> str:
    """The metric name of the test accuracy of a `train.ema_compare` average, e.g. test_accuracy_ema0.9999."""
    return f"test_accuracy_ema{decay:g}"


class EMA:
    """Exponential moving average of a model's weights, with the usual warm-up: the decay used at
    update t is min(decay, (1 + t) / (10 + t)), so early averages are not dominated by the random init."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval()
        self.decay, self.updates = decay, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - self.rate())
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)

    def rate(self) -> float:
        """The decay used at the current update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, num_classes: int, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities (N, K) over the K real classes, in eval mode, batched."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    probs = [
        torch.softmax(model(x[i : i + batch_size].to(device))[0][:, :num_classes], dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    return torch.cat(probs)


EpochCallback = Callable[[int, dict[str, float], Optional[nn.Module]], None]


def fit(cfg: Config, split: Split, on_epoch: Optional[EpochCallback] = None, progress: Optional[bool] = None,
        resume: Optional[dict[str, Any]] = None, on_state: Optional[Callable[[dict[str, Any]], None]] = None) -> TrainResult:
    """Train per `cfg` on `split`. `on_epoch(epoch, metrics, generator)` is called after every epoch.

    `progress=None` shows tqdm bars only on a TTY. Ctrl-C stops cleanly after the current step. When
    the watchdog stops training, the networks are rolled back to the end of the last good epoch.
    Either way the result says why training stopped (`stop_reason`).

    `on_state(state)` receives the whole training state after the latest finished epoch (ssgan/resume.py)
    every `train.state_every_s` seconds and when training stops early; `resume=state` continues such a
    run after its last epoch, and it ends as the uninterrupted run would.
    """
    t, tricks = cfg.train, cfg.tricks
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    data = BatchSource(split.x_train, split.y_train, device, t.data_on_device)  # device-resident when it fits
    init_idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(t.seed))[:500]
    x_probe, _ = data.get(init_idx)  # fixed real batch: weight-norm init and the collapse monitor
    nets = prepare(build_nets(cfg, split.input_shape, split.num_classes, device, x_init=x_probe), cfg)
    ema = EMA(nets.D, t.ema_decay) if t.ema_decay > 0 else None
    evaluated = ema.model if ema else nets.D
    compared = [EMA(nets.D, d) for d in t.ema_compare]  # further averages, evaluated only (train.ema_compare)
    index_device = data.device if data.resident else None  # batches drawn by index where the data live
    idx_lb = split.labeled_idx.to(index_device) if index_device else split.labeled_idx
    chunk = 1 << 16 if index_device is not None and index_device.type != "cpu" else 0  # indices moved at once
    x_test, y_test = (split.x_test.to(device), split.y_test.to(device)) if data.resident else (split.x_test, split.y_test)
    steps, total = check_plan(cfg, split)
    schedule = Schedule([o for o in (nets.opt_d, nets.opt_g) if o is not None], lambda s: lr_factor(t, tricks, s, total))
    # the same labeled batches in both modes
    lb_stream = IndexStream(len(idx_lb), t.batch_size, torch.Generator().manual_seed(t.seed), index_device, chunk)
    # D's and G's unlabeled batches come from two independent passes: each sees every example once per epoch
    ulb_stream = IndexStream(len(data), t.batch_size, torch.Generator().manual_seed(t.seed + 1), index_device, chunk)
    ulb2_stream = IndexStream(len(data), t.batch_size, torch.Generator().manual_seed(t.seed + 2), index_device, chunk)
    z_probe = torch.rand(256, cfg.model.noise_dim, generator=torch.Generator().manual_seed(t.seed)).to(device)
    c_probe = torch.arange(256, device=device) % split.num_classes  # every class equally, for a conditional G
    watchdog = Watchdog(tricks.watchdog, device, adversarial=nets.G is not None)
    check_every = min(tricks.watchdog.patience, 50)
    parts = Parts(nets, ([ema] if ema else []) + compared, schedule, [lb_stream, ulb_stream, ulb2_stream], watchdog, device)
    result = TrainResult(classifier=evaluated, generator=nets.G)
    keys: list[str] = []  # the losses train_step returns, in order
    sums = torch.zeros(0, device=device)  # their per-epoch sums, on the device, updated in place

    def step(*batch: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        nonlocal sums
        losses = train_step(nets, cfg, *batch)
        stacked = torch.stack([v.float() for v in losses.values()])  # one tensor: a kernel per step, not per loss
        watchdog.observe(losses, stacked)
        if keys:
            sums.add_(stacked)
        else:  # first step (always eager, also when graphed)
            keys.extend(losses)
            sums = stacked.clone()
        return losses

    run_step = GraphedStep(step) if nets.graphed else step

    nets.D.train()
    set_noise_scale(nets.D, noise_scale(tricks, 0, total))
    if nets.G is not None:
        nets.G.train()
    if resume is not None:
        result.history = list(resume["history"])
        log.info("resuming after epoch %d of %d", len(result.history), t.epochs)
    keeper = Keeper(parts, cfg, split.split_hash, len(result.history), result.history, resume, on_state)
    try:
        for epoch in range(len(result.history) + 1, t.epochs + 1):
            epoch_start = time.perf_counter()
            sums.zero_()
            for i in tqdm(range(steps), desc=f"epoch {epoch}/{t.epochs}", disable=_quiet(progress), leave=False):
                x_lb, y_lb = data.get(idx_lb[next(lb_stream)])
                x_ulb = x_ulb2 = None
                if nets.G is not None:
                    x_ulb, x_ulb2 = data.inputs(next(ulb_stream)), data.inputs(next(ulb2_stream))
                if tricks.noise_anneal:
                    set_noise_scale(nets.D, noise_scale(tricks, (epoch - 1) * steps + i, total))
                run_step(x_lb, y_lb, x_ulb, x_ulb2)
                schedule.step()
                if ema:
                    ema.update(nets.D)
                for other in compared:
                    other.update(nets.D)
                if (i + 1) % check_every == 0 and _watch(watchdog, result, None):
                    break
            if result.stop_reason != "completed":
                break
            # Host sync once per epoch: read the summed losses and evaluate.
            metrics = {k: v / steps for k, v in zip(keys, sums.tolist())}
            metrics.update(_epoch_metrics(nets, evaluated, split, x_test, y_test, x_probe[:256], z_probe, c_probe))
            for other in compared:
                metrics[ema_metric(other.decay)] = _accuracy(other.model, x_test, y_test, split.num_classes)
            metrics["epoch_seconds"] = time.perf_counter() - epoch_start
            if _watch(watchdog, result, metrics.get("gen_diversity")):
                break
            result.history.append(metrics)
            log.info("epoch %d/%d  %s", epoch, t.epochs, "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))
            if on_epoch:
                on_epoch(epoch, metrics, nets.G)
            keeper.epoch_done(epoch, result.history)
    except KeyboardInterrupt:
        result.stop_reason, result.stop_message = "interrupted", "interrupted by the user"
        log.warning("interrupted: %s", interrupted_message(len(result.history), keeper.good["epoch"]))
    if keeper.stop(result.stop_reason):
        log.warning("watchdog stopped training after %d good epoch(s): %s", len(result.history), result.stop_message)
    result.seconds = keeper.seconds()
    if isinstance(run_step, GraphedStep):
        result.cuda_graph = "on" if run_step.captured else f"failed: {run_step.failure}" if run_step.failure else "off"
    evaluated.eval()
    if nets.G is not None:
        nets.G.eval()
    return result


def _epoch_metrics(nets: Nets, evaluated: nn.Module, split: Split, x_test: torch.Tensor, y_test: torch.Tensor,
                   x_probe: torch.Tensor, z_probe: torch.Tensor, c_probe: torch.Tensor) -> dict[str, float]:
    """Test accuracy (EMA and raw weights), the collapse monitor and the learning rate."""
    metrics = {"test_accuracy": _accuracy(evaluated, x_test, y_test, split.num_classes)}
    if evaluated is not nets.D:  # the raw weights too, to see what the average buys
        metrics["test_accuracy_raw"] = _accuracy(nets.D, x_test, y_test, split.num_classes)
    if nets.G is not None:
        with torch.no_grad():
            x_fake = nets.G.eval()(z_probe, c_probe if nets.G.condition.dim else None)
        nets.G.train()
        metrics.update(collapse_metrics(nets.D, x_fake, x_probe, split.num_classes))
    metrics["lr"] = float(nets.opt_d.param_groups[0]["lr"])
    return metrics


def _watch(watchdog: Watchdog, result, diversity: Optional[float]) -> bool:
    """Apply the watchdog's verdict to a TrainResult or SeedsResult; True when training must stop."""
    reason = watchdog.verdict(diversity)
    if reason is None:
        return False
    if watchdog.cfg.action == "warn":
        result.watchdog_warnings.append(reason)
        log.warning("watchdog: %s (continuing: tricks.watchdog.action=warn)", watchdog.message(reason))
        watchdog.reset()
        return False
    result.stop_reason, result.stop_message = reason, watchdog.message(reason)
    return True


@torch.no_grad()
def _accuracy(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, num_classes: int) -> float:
    """Test accuracy, counted on the training device: one host sync, and on a GPU one forward
    for up to 10,000 rows (the per-epoch evaluation was about a tenth of a graphed run's time)."""
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


class IndexStream:
    """Endless batches of indices into range(n): each pass is a fresh permutation, so every example
    is drawn once per pass; a batch larger than n spans several passes (small labeled sets).

    Permutations are drawn on the host from `gen`, so the batches are the same on every device and for
    every `chunk`. They move to `device` (if given) `chunk` or more indices at a time: on a GPU the
    steps then make no host-to-device copy (a copy from pageable memory would make the host wait for
    the GPU at every step). `state_dict` says where the stream is, so a resumed run draws on exactly."""

    def __init__(self, n: int, batch_size: int, gen: torch.Generator, device: Optional[torch.device] = None,
                 chunk: int = 0):
        self.n, self.batch_size, self.gen, self.device, self.chunk = n, batch_size, gen, device, chunk
        self.buf = torch.empty(0, dtype=torch.int64, device=device)  # drawn, not yet served

    def __iter__(self) -> "IndexStream":
        return self

    def __next__(self) -> torch.Tensor:
        if len(self.buf) < self.batch_size:
            self._draw()
        batch, self.buf = self.buf[: self.batch_size], self.buf[self.batch_size :]
        return batch

    def _draw(self) -> None:
        perms, have = [], len(self.buf)
        while have < max(self.batch_size, self.chunk):
            perms.append(torch.randperm(self.n, generator=self.gen))
            have += self.n
        fresh = torch.cat(perms)
        if self.device is not None and self.device.type == "cuda":
            fresh = fresh.pin_memory().to(self.device, non_blocking=True)
        elif self.device is not None:
            fresh = fresh.to(self.device)
        self.buf = torch.cat([self.buf, fresh]) if len(self.buf) else fresh

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen": self.gen.get_state(), "buf": self.buf}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen.set_state(state["gen"])
        self.buf = state["buf"].to(self.buf.device)


class Schedule:
    """The learning rate of step s is base_lr * factor(s) for every optimizer (what LambdaLR computes),
    set in place, and only when it changes (a captured Adam reads it from the device)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], factor: Callable[[int], float]):
        self.optimizers, self.factor, self.steps = optimizers, factor, 0
        self.base = [float(o.param_groups[0]["lr"]) for o in optimizers]
        self.last: Optional[float] = None
        self._apply()

    def step(self) -> None:
        self.steps += 1
        self._apply()

    def _apply(self) -> None:
        f = self.factor(self.steps)
        if f != self.last:
            for o, base in zip(self.optimizers, self.base):
                set_lr(o, base * f)
            self.last = f


def _quiet(progress: Optional[bool]) -> Optional[bool]:
    return None if progress is None else not progress


def _fmt(v: float) -> str:
    return f"{v:.4g}"
