"""Discriminator (K+1-class classifier) and generator networks.

The discriminator returns `(logits, features)`: logits over the K real classes — plus an explicit
K+1-th "fake" logit when `model.fake_logit: explicit` — and the penultimate features used by feature
matching. With the default `fixed_zero`, the fake logit is fixed at 0 (Salimans et al. 2016, sec. 5):
D(real | x) = Z(x) / (Z(x) + 1), Z(x) = sum_k exp(l_k(x)), which loses nothing since softmax is
invariant to a shared shift of all K+1 logits.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ssgan.config import ModelConfig
from ssgan.errors import ConfigError


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode only (Salimans et al. 2016's MNIST discriminator)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x


class WeightNormLinear(nn.Module):
    """y = g * (v / ||v||) x + b, per output unit (Salimans & Kingma 2016, "Weight Normalization").

    `init_from_data` applies the paper's data-dependent initialization: on the next forward, g and b
    are set so that the layer's pre-activations have zero mean and unit variance on that batch.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_features, in_features) * 0.05)
        self.g = nn.Parameter(torch.ones(out_features))
        self.b = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._init_pending = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._init_pending:
            self._init_pending = False
            with torch.no_grad():
                t = nn.functional.linear(x, self.v / self.v.norm(dim=1, keepdim=True))  # (B, out)
                std = t.std(dim=0) + 1e-6
                self.g.copy_(1.0 / std)
                if self.b is not None:
                    self.b.copy_(-t.mean(dim=0) / std)
        weight = self.v * (self.g / self.v.norm(dim=1)).unsqueeze(1)  # (out, in)
        return nn.functional.linear(x, weight, self.b)


@torch.no_grad()
def init_from_data(model: nn.Module, *inputs: torch.Tensor) -> None:
    """Data-dependent init of every weight-normed layer of `model`, layer by layer, on one batch."""
    layers = [m for m in model.modules() if isinstance(m, WeightNormLinear)]
    if not layers:
        return
    for m in layers:
        m._init_pending = True
    model(*inputs)


def _activation(cfg: ModelConfig) -> nn.Module:
    return nn.LeakyReLU(cfg.leaky_slope) if cfg.activation == "leaky_relu" else nn.ReLU()


def _num_outputs(cfg: ModelConfig, num_classes: int) -> int:
    return num_classes + 1 if cfg.fake_logit == "explicit" else num_classes


class MLPDiscriminator(nn.Module):
    """Permutation-invariant MLP of Salimans et al. 2016 (MNIST: 784-1000-500-250-250-250-K).

    Weight-normalized dense layers, Gaussian noise on the input (std 0.3) and before every
    further layer (std 0.5).
    """

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        sizes = (math.prod(input_shape), *cfg.d_hidden)
        layers: list[nn.Module] = [nn.Flatten(), GaussianNoise(cfg.input_noise)]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(GaussianNoise(cfg.hidden_noise))
            layers += [WeightNormLinear(n_in, n_out), _activation(cfg)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(GaussianNoise(cfg.hidden_noise), WeightNormLinear(sizes[-1], _num_outputs(cfg, num_classes)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)  # (B, d_hidden[-1])
        return self.head(features), features  # (B, K or K+1), (B, F)


class MLPGenerator(nn.Module):
    """z ~ U(0, 1)^noise_dim -> softplus dense layers with batch norm -> weight-normed output layer."""

    def __init__(self, cfg: ModelConfig, output_shape: tuple[int, ...], out_act: nn.Module):
        super().__init__()
        self.noise_dim, self.output_shape = cfg.noise_dim, output_shape
        sizes = (cfg.noise_dim, *cfg.g_hidden)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.Softplus()]
        layers += [WeightNormLinear(sizes[-1], math.prod(output_shape)), out_act]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(-1, *self.output_shape)  # (B, *output_shape)


class ConvDiscriminator(nn.Module):
    """DCGAN-style: strided 4x4 convs (each halves H and W), LeakyReLU, no pooling, linear head."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        c, h, w = _image_shape(input_shape)
        width = cfg.conv_width
        self.body = nn.Sequential(
            GaussianNoise(cfg.input_noise),
            nn.Conv2d(c, width, 3, 1, 1), nn.LeakyReLU(cfg.leaky_slope),  # (B, w, H, W)
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(cfg.leaky_slope),  # H/2
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.BatchNorm2d(4 * width), nn.LeakyReLU(cfg.leaky_slope),  # H/4
            nn.Flatten(),  # (B, 4w * H/4 * W/4)
        )
        self.head = nn.Linear(4 * width * (h // 4) * (w // 4), _num_outputs(cfg, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features), features


class ConvGenerator(nn.Module):
    """z -> (4w, H/4, W/4) -> two stride-2 transposed convs with batch norm -> (C, H, W)."""

    def __init__(self, cfg: ModelConfig, output_shape: tuple[int, ...], out_act: nn.Module):
        super().__init__()
        c, h, w = _image_shape(output_shape)
        width = cfg.conv_width
        self.noise_dim, self.start = cfg.noise_dim, (4 * width, h // 4, w // 4)
        self.project = nn.Sequential(
            nn.Linear(cfg.noise_dim, math.prod(self.start), bias=False), nn.BatchNorm1d(math.prod(self.start)), nn.ReLU()
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),  # H/2
            nn.ConvTranspose2d(2 * width, c, 4, 2, 1), out_act,  # (B, C, H, W)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(z).view(-1, *self.start))


class Classifier(nn.Module):
    """Inference wrapper logged to MLflow: inputs -> probabilities over the K real classes."""

    def __init__(self, discriminator: nn.Module, num_classes: int):
        super().__init__()
        self.discriminator, self.num_classes = discriminator, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.discriminator(x)
        return torch.softmax(logits[:, : self.num_classes], dim=1)  # (B, K)


def build_discriminator(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    cls = ConvDiscriminator if cfg.arch == "conv" else MLPDiscriminator
    return cls(cfg, input_shape, num_classes)


def build_generator(cfg: ModelConfig, output_shape: tuple[int, ...], scale: str) -> nn.Module:
    """The generator's output activation matches the data's range: tanh for [-1, 1], sigmoid for [0, 1]."""
    out_act = nn.Tanh() if scale == "tanh" else nn.Sigmoid()
    cls = ConvGenerator if cfg.arch == "conv" else MLPGenerator
    return cls(cfg, output_shape, out_act)


def sample_noise(n: int, noise_dim: int, device: torch.device | str) -> torch.Tensor:
    """z ~ U(0, 1)^noise_dim, as in Salimans et al. 2016."""
    return torch.rand(n, noise_dim, device=device)


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ConfigError(
            f"model.arch=conv needs images of shape (C, H, W) with H and W divisible by 4; the data has shape "
            f"{tuple(shape)}; use model.arch=mlp"
        )
    return shape[0], shape[1], shape[2]
