"""The consistency methods: modes of the same classifier network without a generator, whose unlabeled term
asks for predictions that do not change under a small change of the input.

mode=vat           KL(p(x) || p(x + r_adv)), r_adv the perturbation of norm ssl.vat.eps that changes the
                   prediction most (Miyato et al. 2018; ssgan/nets/vat.py); with ssl.vat.entropy_weight, VAT+EntMin.
mode=mean_teacher  || p_student(x + n) - p_teacher(x + n') ||^2, the teacher the exponential moving average of
                   the student's weights (train.ema_decay), both under D's noise (Tarvainen & Valpola 2017).
mode=pi_model      || p(x + n) - p(x + n') ||^2, two noisy passes of the same network (Laine & Aila 2017).

Each mode has its settings in its own part of the ssl section (`settings`): the term's weight, ramped up over
`rampup_steps` (`sigmoid_rampup`), an entropy term's weight, and whether D's Gaussian noise layers are on; so one
config serves ssgan and every consistency mode of a comparison. The terms enter the classifier's loss in
`ssgan.training.step.d_objective`.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

import torch
from torch import nn

from ssgan.config import Config, ConsistencyMethod
from ssgan.errors import ConfigError
from ssgan.nets.losses import consistency_loss, kl_divergence
from ssgan.nets.vat import adversarial_direction

CONSISTENCY = ("vat", "mean_teacher", "pi_model")
NOISY = ("mean_teacher", "pi_model")  # compare two noisy predictions: D needs a source of noise


def consistency_term(nets: Any, cfg: Config, x_ulb: torch.Tensor, logits_ulb: torch.Tensor) -> torch.Tensor:
    """The unlabeled term of `cfg.mode` on a batch x_ulb whose (noisy) logits under the network are `logits_ulb`."""
    K, forward = nets.num_classes, nets.d_forward
    if cfg.mode == "vat":
        vat = cfg.ssl.vat
        # r_adv: power iteration on the fixed prediction, through D itself (only the direction is differentiated)
        d = adversarial_direction(lambda x: nets.d_fixed(x)[0].float(), x_ulb, logits_ulb, K, vat.xi, vat.iterations)
        return kl_divergence(logits_ulb.detach(), forward(x_ulb + vat.eps * d)[0].float(), K)
    if cfg.mode == "mean_teacher":
        with torch.no_grad(), noisy(nets.teacher):  # the teacher: D's moving average, under its own noise draw
            logits_teacher = nets.teacher(x_ulb)[0].float()
        return consistency_loss(logits_ulb, logits_teacher, K)
    if cfg.mode == "pi_model":  # a second noisy pass; both passes get gradients (Laine & Aila 2017, sec. 2.1)
        return consistency_loss(logits_ulb, forward(x_ulb)[0].float(), K)
    raise ValueError(f"mode {cfg.mode!r} has no consistency term")


@contextlib.contextmanager
def noisy(model: nn.Module):
    """`model` in training mode (its noise layers and dropout on) for the block, then back as it was."""
    was = model.training
    model.train()
    try:
        yield model
    finally:
        model.train(was)


def check_consistency(cfg: Config) -> None:
    """What a consistency mode needs of the config."""
    if cfg.mode not in CONSISTENCY:
        return
    if cfg.mode == "mean_teacher" and cfg.train.ema_decay <= 0:
        raise ConfigError("mode=mean_teacher needs train.ema_decay > 0: the teacher is the moving average of the "
                          "student's weights (e.g. train.ema_decay=0.99)")
    if cfg.mode in NOISY and not has_noise(cfg):
        raise ConfigError(f"mode={cfg.mode} compares two noisy predictions, but D has no noise: set "
                          f"model.input_noise > 0 with D's Gaussian noise on (ssl.{cfg.mode}.gaussian_noise, or "
                          "tricks.gaussian_noise), "
                          "or tricks.dropout > 0")


def has_noise(cfg: Config) -> bool:
    m = cfg.model
    gaussian = gaussian_noise(cfg) and (m.input_noise > 0 or m.hidden_noise > 0 or any(m.hidden_noise_per_layer))
    return gaussian or cfg.tricks.dropout > 0


def settings(cfg: Config) -> Optional[ConsistencyMethod]:
    """The ssl settings of the config's mode (ssl.vat, ssl.mean_teacher, ssl.pi_model), None outside these modes."""
    return getattr(cfg.ssl, cfg.mode) if cfg.mode in CONSISTENCY else None


def gaussian_noise(cfg: Config) -> bool:
    """Whether D's Gaussian noise layers are on: tricks.gaussian_noise, or the consistency mode's own setting
    (ssl.<mode>.gaussian_noise; null = tricks.gaussian_noise, vat's default: off)."""
    own = settings(cfg)
    return cfg.tricks.gaussian_noise if own is None or own.gaussian_noise is None else own.gaussian_noise


def entropy_weight(cfg: Config) -> float:
    """The weight of the entropy of the prediction on unlabeled data: tricks.entropy_weight in ssgan mode, the
    consistency mode's own (ssl.<mode>.entropy_weight; vat: VAT+EntMin)."""
    own = settings(cfg)
    return cfg.tricks.entropy_weight if own is None else own.entropy_weight
