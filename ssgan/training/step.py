"""One training step: `train_step` with the D update and the G update written out, and what it needs.

mode=ssgan      D minimizes L_sup(x_lb) + unsup_weight * L_unsup(x_ulb, G(z)); G matches D's features
                (Salimans et al. 2016, sec. 3.1 and 5; Odena 2016).
mode=supervised the same D, optimizer and schedule on the labeled subset alone (no generator).
mode=vat, mean_teacher, pi_model
                the same D without a generator: L_sup(x_lb) + w(t) * L_cons(x_ulb), a consistency term on the
                unlabeled batch (ssgan/training/consistency.py).

Both modes take the same number of steps per epoch (one pass over the unlabeled pool) and draw the
same labeled batches for the same seed, so the supervised run is the baseline for exactly this split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ssgan.config import Config
from ssgan.data.splits import Split
from ssgan.errors import ConfigError
from ssgan.nets.losses import (conditional_entropy, feature_matching_loss, non_saturating_loss, real_fake_loss,
                               real_logit, supervised_loss)
from ssgan.nets.models import (build_discriminator, build_generator, check_tricks_apply, frozen, has_batch_norm,
                               init_from_data, sample_noise)
from ssgan.training.consistency import (CONSISTENCY, check_consistency, consistency_term, entropy_weight,
                                        gaussian_noise, settings)
from ssgan.training.distributed import Shard, World, check_batch, data_parallel, shared_stream, sync_batch_norm
from ssgan.training.graphs import use_cuda_graph
from ssgan.training.tricks import make_optimizer, noise_scale, real_fake_targets, set_noise_scale


@dataclass
class Nets:
    D: nn.Module
    G: Optional[nn.Module]  # None in supervised mode
    opt_d: torch.optim.Optimizer
    opt_g: Optional[torch.optim.Optimizer]
    num_classes: int
    fused: bool = False  # D's update in one forward (train.fused_d, and D has no batch norm)
    fused_g: bool = False  # G's feature matching: real and generated rows in one forward of D (train.fused_g)
    graphed: bool = False  # the step is replayed as a CUDA graph (train.cuda_graph, ssgan/training/graphs.py)
    d_forward: Optional[Callable] = None  # D, torch.compile(D) or DDP(D) (see `prepare`); the modules stay as they are
    g_forward: Optional[Callable] = None
    d_fixed: Optional[Callable] = None  # D's forward in G's update, where D is fixed: D itself under DDP
    teacher: Optional[nn.Module] = None  # mode=mean_teacher: D's moving average (set with the EMA)
    ramp: Optional[torch.Tensor] = None  # consistency modes: the ramp-up factor of ssl.<mode>.weight, set every step
    shard: Shard = Shard()  # this rank's part of the batch under torchrun (ssgan/training/distributed.py)

    def __post_init__(self):
        self.d_forward = self.d_forward or self.D
        self.g_forward = self.g_forward or self.G
        self.d_fixed = self.d_fixed or self.d_forward


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
    check_consistency(cfg)
    check_batch(cfg.train.batch_size)  # under torchrun: the global batch splits evenly over the processes
    steps = cfg.train.steps_per_epoch or max(1, len(split.x_train) // cfg.train.batch_size)
    total = steps * cfg.train.epochs
    if cfg.tricks.warmup_steps > total:
        raise ConfigError(f"tricks.warmup_steps={cfg.tricks.warmup_steps} is longer than training ({total} steps); "
                          "lower it or train longer")
    return steps, total


def build_nets(cfg: Config, input_shape: tuple[int, ...], num_classes: int, device: torch.device,
               x_init: Optional[torch.Tensor] = None, world: World = World()) -> Nets:
    """D (and G in ssgan mode) with their optimizers; `x_init` is a batch of training inputs for the
    data-dependent init of weight-normed layers (Salimans & Kingma 2016). Under torchrun (`world`) their
    batch norm is synchronised over the ranks."""
    t, tricks = cfg.train, cfg.tricks
    graphed = use_cuda_graph(cfg, device, world)
    D = build_discriminator(cfg.model, input_shape, num_classes, tricks).to(device)
    if cfg.model.data_init and x_init is not None:
        init_from_data(D, x_init)
    if world.spread:
        D = sync_batch_norm(D, device)
    set_noise_scale(D, noise_scale(tricks, 0, 1, gaussian_noise(cfg)))  # Gaussian noise on or off
    opt_d = make_optimizer(D.parameters(), tricks.lr_d or t.lr, t, tricks, capturable=graphed)
    G, opt_g = None, None
    if cfg.mode == "ssgan":
        G = build_generator(cfg.model, input_shape, cfg.data.scale, tricks, num_classes).to(device)
        G = sync_batch_norm(G, device) if world.spread else G
        opt_g = make_optimizer(G.parameters(), tricks.lr_g or t.lr, t, tricks, capturable=graphed,
                               betas=tricks.betas_g)
    fused = t.fused_d and not has_batch_norm(D)
    # G's fused forward saves a whole forward of D (kernels: what a GPU step is bound by) but computes
    # input gradients for the real rows too (FLOPs: what a CPU step is bound by), so null = on a GPU only.
    fused_g = fused and (t.fused_g if t.fused_g is not None else device.type == "cuda")
    ramp = torch.ones((), device=device) if cfg.mode in CONSISTENCY else None
    return Nets(D, G, opt_d, opt_g, num_classes, fused=fused, fused_g=fused_g, graphed=graphed, ramp=ramp)


def prepare(nets: Nets, cfg: Config, world: World = World()) -> Nets:
    """Speed switches that leave the maths alone: torch.compile (train.compile) and, for conv models on
    CUDA, channels_last memory layout and cuDNN autotuning. Under torchrun (`world`): D's and G's gradients
    averaged over the ranks (DistributedDataParallel), and the batch-wide random draws from one stream that
    every rank holds (ssgan/training/distributed.py)."""
    device = next(nets.D.parameters()).device
    set_matmul_precision(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        if cfg.model.arch == "conv":
            for net in (nets.D, nets.G):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
    d, g, fixed = nets.D, nets.G, None
    if world.spread:  # G's update uses D as a fixed function: D itself, outside DDP (no gradients to average)
        d, g, fixed = data_parallel(nets.D, device), data_parallel(nets.G, device), nets.D
        nets.shard = Shard(world, shared_stream(device))
    if cfg.train.compile:
        d, g = torch.compile(d), torch.compile(g) if g is not None else None
        fixed = torch.compile(fixed) if fixed is not None else None
    nets.d_forward, nets.g_forward, nets.d_fixed = d, g, fixed or d
    return nets


def set_matmul_precision(cfg: Config) -> None:
    """train.precision=tf32: CUDA matmuls of fp32 tensors on TF32 tensor cores (10-bit mantissa); otherwise
    full fp32 matmuls (PyTorch's default). A process-wide switch, set by every run."""
    torch.backends.cuda.matmul.allow_tf32 = cfg.train.precision == "tf32"


def autocast(cfg: Config, device: torch.device):
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
        + w(t) * L_cons(x_ulb)                               [vat, mean_teacher, pi_model: `consistency_term`]
        + entropy_weight * H(p(y | x_ulb))                         [tricks.entropy_weight, ssl.<mode>.entropy_weight]
    """
    D, G, K = nets.d_forward, nets.g_forward, nets.num_classes
    device = x_lb.device
    with autocast(cfg, device):  # forwards in bf16 when asked; every loss below is computed in fp32
        logits_ulb = None
        if G is None:
            logits_lb = D(x_lb)[0].float()  # (B, K[+1])
            if cfg.mode in CONSISTENCY:
                logits_ulb = D(x_ulb)[0].float()  # (B, K)
        else:
            c_fake = fake_classes(nets, len(x_ulb), device)  # (B,) class conditions, or None
            with torch.no_grad():  # no gradient into G from D's update
                x_fake = G(noise(nets, len(x_ulb), device), c_fake)  # (B, *input_shape)
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
        t_ulb, t_fake = nets.shard.draw(len(x_ulb), lambda n, gen: real_fake_targets(n, n, cfg.tricks, device, gen))
        loss_unsup = real_fake_loss(r_ulb, r_fake, t_ulb, t_fake)  # = unsupervised_loss(logits_ulb, logits_fake, ...)
        loss_d = loss_sup + cfg.train.unsup_weight * loss_unsup
        out["loss_unsup"] = loss_unsup.detach()
        if c_fake is not None:
            loss_cond = supervised_loss(logits_fake, c_fake, K)
            loss_d = loss_d + cfg.tricks.cond_weight * loss_cond
            out["loss_cond_d"] = loss_cond.detach()
    if cfg.mode in CONSISTENCY:  # + w(t) * L_cons(x_ulb): w ramped up to ssl.<mode>.weight
        with autocast(cfg, device):
            loss_cons = consistency_term(nets, cfg, x_ulb, logits_ulb)
        loss_d = loss_d + settings(cfg).weight * nets.ramp * loss_cons
        out["loss_consistency"] = loss_cons.detach()
    if entropy_weight(cfg) and logits_ulb is not None:  # + entropy_weight * H(p(y | x_ulb)): confident
        loss_ent = conditional_entropy(logits_ulb, K)     # predictions on unlabeled data
        loss_d = loss_d + entropy_weight(cfg) * loss_ent
        out["loss_entropy"] = loss_ent.detach()
    out["loss_d"] = loss_d.detach()
    out["train_acc_lb"] = (logits_lb[:, :K].argmax(1) == y_lb).float().mean().detach()
    return loss_d, out


def g_objective(nets: Nets, cfg: Config, x_ulb2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """G's loss on one batch: feature matching, || E f(x_ulb2) - E f(G(z)) ||^2 (Salimans et al. sec. 3.1),
    or non-saturating, -log D(G(z)); a conditional G also minimizes -log p(c | G(z, c), real)."""
    D, G, K = nets.d_fixed, nets.g_forward, nets.num_classes
    device = x_ulb2.device
    c_fake = fake_classes(nets, len(x_ulb2), device)
    with autocast(cfg, device):
        x_fake = G(noise(nets, len(x_ulb2), device), c_fake)
        if cfg.train.gen_loss == "feature_matching":
            if nets.fused_g:  # one forward over real and generated rows; the real rows' features are constants
                logits, feats = D(torch.cat([x_ulb2, x_fake.to(x_ulb2.dtype)]))
                logits_fake = logits[len(x_ulb2):]
                feat_real, feat_fake = feats[: len(x_ulb2)].detach(), feats[len(x_ulb2):]
            else:
                logits_fake, feat_fake = D(x_fake)
                with torch.no_grad():
                    _, feat_real = D(x_ulb2)
            # under torchrun: the means over the global batch (every rank's rows)
            loss_g = feature_matching_loss(nets.shard.gather(feat_real.float()), nets.shard.gather(feat_fake.float()))
        else:
            logits_fake, feat_fake = D(x_fake)
            loss_g = non_saturating_loss(logits_fake.float(), K)
        if c_fake is not None:
            loss_g = loss_g + cfg.tricks.cond_weight * supervised_loss(logits_fake.float(), c_fake, K)
    return loss_g, {"loss_g": loss_g.detach()}


def noise(nets: Nets, n: int, device: torch.device) -> torch.Tensor:
    """G's input z for `n` rows (this rank's part of the batch's draw under torchrun)."""
    return nets.shard.draw(n, lambda m, gen: sample_noise(m, nets.G.noise_dim, device, gen))


def fake_classes(nets: Nets, n: int, device: torch.device) -> Optional[torch.Tensor]:
    """Uniformly drawn class conditions for a conditional generator; None for an unconditional one."""
    if not nets.G.condition.dim:
        return None
    return nets.shard.draw(n, lambda m, gen: torch.randint(nets.num_classes, (m,), device=device, generator=gen))
