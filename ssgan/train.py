"""The training loop: one `train_step` with the D update and the G update written out.

mode=ssgan      D minimizes L_sup(x_lb) + unsup_weight * L_unsup(x_ulb, G(z)); G matches D's features.
mode=supervised the same D, optimizer and schedule on the labeled subset alone (no generator).

Both modes take the same number of steps per epoch (one pass over the unlabeled pool) and draw the
same labeled batches for the same seed, so the supervised run is the baseline for exactly this split.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from ssgan.config import Config, TrainConfig
from ssgan.data import Split
from ssgan.errors import ConfigError
from ssgan.losses import feature_matching_loss, non_saturating_loss, supervised_loss, unsupervised_loss
from ssgan.models import build_discriminator, build_generator, init_from_data, sample_noise

log = logging.getLogger("ssgan")


@dataclass
class Nets:
    D: nn.Module
    G: Optional[nn.Module]  # None in supervised mode
    opt_d: torch.optim.Optimizer
    opt_g: Optional[torch.optim.Optimizer]
    num_classes: int


@dataclass
class TrainResult:
    classifier: nn.Module  # the EMA discriminator (or the raw one when ema_decay = 0), in eval mode
    generator: Optional[nn.Module]
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "completed"
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name} but no CUDA GPU is available; use train.device=cpu or auto")
    return torch.device(name)


def build_nets(cfg: Config, input_shape: tuple[int, ...], num_classes: int, device: torch.device,
               x_init: Optional[torch.Tensor] = None) -> Nets:
    """D (and G in ssgan mode) with their Adam optimizers; `x_init` is a batch of training inputs for the
    data-dependent init of weight-normed layers (Salimans & Kingma 2016)."""
    t = cfg.train
    D = build_discriminator(cfg.model, input_shape, num_classes).to(device)
    if cfg.model.data_init and x_init is not None:
        init_from_data(D, x_init)
    opt_d = torch.optim.Adam(D.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
    G, opt_g = None, None
    if cfg.mode == "ssgan":
        G = build_generator(cfg.model, input_shape, cfg.data.scale).to(device)
        opt_g = torch.optim.Adam(G.parameters(), lr=t.lr, betas=(t.beta1, t.beta2))
    return Nets(D, G, opt_d, opt_g, num_classes)


def train_step(nets: Nets, cfg: TrainConfig, x_lb, y_lb, x_ulb=None, x_ulb2=None) -> dict[str, torch.Tensor]:
    """One update of D, then (ssgan mode) one update of G. Returns detached losses (no host sync)."""
    D, G, K = nets.D, nets.G, nets.num_classes

    # (1) Update D: minimize L_sup = -log p(y | x_lb, real)                              [supervised]
    #               + unsup_weight * L_unsup, L_unsup = -log D(x_ulb) - log(1 - D(G(z)))  [ssgan only]
    logits_lb, _ = D(x_lb)  # (B, K[+1]); the labeled forward comes first so both modes draw the same noise
    loss_sup = supervised_loss(logits_lb, y_lb, K)
    loss_d = loss_sup
    out = {"loss_sup": loss_sup.detach()}
    if G is not None:
        x_fake = G(sample_noise(x_ulb.shape[0], G.noise_dim, x_ulb.device))  # (B, *input_shape)
        logits_ulb, _ = D(x_ulb)
        logits_fake, _ = D(x_fake.detach())  # no gradient into G from D's update
        loss_unsup = unsupervised_loss(logits_ulb, logits_fake, K)
        loss_d = loss_sup + cfg.unsup_weight * loss_unsup
        out["loss_unsup"] = loss_unsup.detach()
    nets.opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    nets.opt_d.step()
    out["loss_d"] = loss_d.detach()
    out["train_acc_lb"] = (logits_lb[:, :K].argmax(1) == y_lb).float().mean().detach()

    # (2) Update G: feature matching, minimize || E f(x_ulb2) - E f(G(z)) ||^2 (Salimans et al. sec. 3.1),
    #     or non-saturating, minimize -log D(G(z)). Only G's optimizer steps; D's grads are reset in (1).
    if G is not None:
        x_fake = G(sample_noise(x_ulb2.shape[0], G.noise_dim, x_ulb2.device))
        logits_fake, feat_fake = D(x_fake)
        if cfg.gen_loss == "feature_matching":
            with torch.no_grad():
                _, feat_real = D(x_ulb2)
            loss_g = feature_matching_loss(feat_real, feat_fake)
        else:
            loss_g = non_saturating_loss(logits_fake, K)
        nets.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        nets.opt_g.step()
        out["loss_g"] = loss_g.detach()
    return out


def lr_factor(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total_steps`."""
    progress = step / max(total_steps, 1)
    if cfg.lr_schedule == "linear_decay":  # Salimans et al.: constant, then linearly to 0
        if progress < cfg.decay_start:
            return 1.0
        return max(0.0, (1.0 - progress) / max(1.0 - cfg.decay_start, 1e-12))
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


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
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p, 1.0 - d)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


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


def fit(cfg: Config, split: Split, on_epoch: Optional[EpochCallback] = None, progress: Optional[bool] = None) -> TrainResult:
    """Train per `cfg` on `split`. `on_epoch(epoch, metrics, generator)` is called after every epoch.

    `progress=None` shows tqdm bars only on a TTY. Ctrl-C stops cleanly after the current step:
    the result holds what was trained so far and `stop_reason == "interrupted"`.
    """
    t = cfg.train
    device = resolve_device(t.device)
    torch.manual_seed(t.seed)
    x_train, y_train = split.x_train.to(device), split.y_train.to(device)  # device-resident data
    init_idx = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(t.seed))[:500]
    nets = build_nets(cfg, split.input_shape, split.num_classes, device, x_init=x_train[init_idx.to(device)])
    ema = EMA(nets.D, t.ema_decay) if t.ema_decay > 0 else None
    evaluated = ema.model if ema else nets.D
    idx_lb = split.labeled_idx.to(device)
    x_test = split.x_test.to(device)
    n_ulb, bs = len(x_train), t.batch_size
    steps = t.steps_per_epoch or max(1, n_ulb // bs)
    total = steps * t.epochs
    gen_lb = torch.Generator(device="cpu").manual_seed(t.seed)  # labeled batches: same in both modes
    gen_ulb = torch.Generator(device="cpu").manual_seed(t.seed + 1)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: lr_factor(t, s, total))
                  for o in (nets.opt_d, nets.opt_g) if o is not None]
    lb_stream = _index_stream(len(idx_lb), bs, gen_lb)
    ulb_stream = _index_stream(n_ulb, bs, gen_ulb)

    result = TrainResult(classifier=evaluated, generator=nets.G)
    start = time.perf_counter()
    nets.D.train()
    if nets.G is not None:
        nets.G.train()
    try:
        for epoch in range(1, t.epochs + 1):
            epoch_start = time.perf_counter()
            sums: dict[str, torch.Tensor] = {}
            for _ in tqdm(range(steps), desc=f"epoch {epoch}/{t.epochs}", disable=_quiet(progress), leave=False):
                lb = idx_lb[next(lb_stream).to(device)]
                x_ulb = x_ulb2 = None
                if nets.G is not None:
                    x_ulb = x_train[next(ulb_stream).to(device)]
                    x_ulb2 = x_train[next(ulb_stream).to(device)]
                losses = train_step(nets, t, x_train[lb], y_train[lb], x_ulb, x_ulb2)
                for s in schedulers:
                    s.step()
                if ema:
                    ema.update(nets.D)
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0) + v
            # Host sync once per epoch: read the summed losses and evaluate.
            metrics = {k: float(v) / steps for k, v in sums.items()}
            metrics["test_accuracy"] = _accuracy(evaluated, x_test, split)
            if ema:  # the raw weights too, to see what the average buys
                metrics["test_accuracy_raw"] = _accuracy(nets.D, x_test, split)
            metrics["lr"] = nets.opt_d.param_groups[0]["lr"]
            metrics["epoch_seconds"] = time.perf_counter() - epoch_start
            result.history.append(metrics)
            log.info("epoch %d/%d  %s", epoch, t.epochs, "  ".join(f"{k} {_fmt(v)}" for k, v in metrics.items()))
            if on_epoch:
                on_epoch(epoch, metrics, nets.G)
    except KeyboardInterrupt:
        result.stop_reason = "interrupted"
        log.warning("interrupted: keeping the %d finished epoch(s)", len(result.history))
    result.seconds = time.perf_counter() - start
    evaluated.eval()
    if nets.G is not None:
        nets.G.eval()
    return result


def _accuracy(model: nn.Module, x_test: torch.Tensor, split: Split) -> float:
    return float((predict_proba(model, x_test, split.num_classes).argmax(1) == split.y_test).float().mean())


def _index_stream(n: int, batch_size: int, gen: torch.Generator):
    """Endless batches of indices into range(n): each pass is a fresh permutation, so every example
    is drawn once per pass; a batch larger than n spans several passes (small labeled sets)."""
    buf = torch.empty(0, dtype=torch.int64)
    while True:
        while len(buf) < batch_size:
            buf = torch.cat([buf, torch.randperm(n, generator=gen)])
        yield buf[:batch_size]
        buf = buf[batch_size:]


def _quiet(progress: Optional[bool]) -> Optional[bool]:
    return None if progress is None else not progress


def _fmt(v: float) -> str:
    return f"{v:.4g}"
