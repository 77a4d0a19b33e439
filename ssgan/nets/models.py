"""Discriminator (K+1-class classifier) and generator networks.

The discriminator returns `(logits, features)`: logits over the K real classes — plus an explicit
K+1-th "fake" logit when `model.fake_logit: explicit` — and the penultimate features used by feature
matching. With the default `fixed_zero`, the fake logit is fixed at 0 (Salimans et al. 2016, sec. 5):
D(real | x) = Z(x) / (Z(x) + 1), Z(x) = sum_k exp(l_k(x)), which loses nothing since softmax is
invariant to a shared shift of all K+1 logits.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import torch.nn.utils.parametrize  # noqa: F401  (nn.utils.parametrize.cached)
from torch import nn

from ssgan.config import ModelConfig, TricksConfig
from ssgan.errors import ConfigError


class GaussianNoise(nn.Module):
    """Adds N(0, (scale * std)^2) noise in training mode only (Salimans et al. 2016's MNIST
    discriminator). `scale` is set by the training loop: 1 as configured, 0 off, or annealed.
    A layer that belongs to a `NoiseBank` takes its standard normal draws from the bank's buffer."""

    def __init__(self, std: float):
        super().__init__()
        self.std, self.scale = std, 1.0
        self.bank: Optional[NoiseBank] = None

    @property
    def active(self) -> bool:
        return self.training and self.std * self.scale > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if self.bank is not None and self.bank.drawn:
            return x.add(self.bank.take(x), alpha=self.std * self.scale)  # x + std * N(0, 1)
        return x + torch.empty_like(x).normal_(0.0, self.std * self.scale)  # the std applied while drawing


class NoiseBank:
    """Standard normal noise for all of a network's GaussianNoise layers, drawn in one call per forward
    and handed out in slices: one random-number kernel instead of one per layer (on a GPU the MLP step
    is bound by its number of kernels). The draws have the same distribution as the layers' own."""

    def __init__(self, layers: list[GaussianNoise], widths: list[int]):
        self.layers, self.widths = layers, widths  # widths: features per row at each layer's input
        self.buffer: Optional[torch.Tensor] = None
        self.used = 0
        for layer in layers:
            layer.bank = self

    @property
    def drawn(self) -> bool:
        return self.buffer is not None

    @contextlib.contextmanager
    def draw(self, rows: int, like: torch.Tensor):
        """Draw noise for one forward of `rows` rows (for the layers that are active now)."""
        width = sum(w for layer, w in zip(self.layers, self.widths) if layer.active)
        if width == 0:
            yield
            return
        self.buffer, self.used = torch.randn(rows * width, device=like.device, dtype=like.dtype), 0
        try:
            yield
        finally:
            self.buffer = None

    def take(self, x: torch.Tensor) -> torch.Tensor:
        n = x.numel()
        out = self.buffer[self.used : self.used + n].view(x.shape)
        self.used += n
        return out if out.dtype == x.dtype else out.to(x.dtype)


class WeightNormLinear(nn.Module):
    """y = g * (v / ||v||) x + b, per output unit (Salimans & Kingma 2016, "Weight Normalization").

    `init_from_data` applies the paper's data-dependent initialization: on the next forward, g and b
    are set so that the layer's pre-activations have zero mean and unit variance on that batch.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_std: float = 0.05):
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_features, in_features) * init_std)
        self.g = nn.Parameter(torch.ones(out_features))
        self.b = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._init_pending = False
        self._cache: Optional[torch.Tensor] = None  # g / ||v||, inside `frozen(model)` only
        self._caching = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._init_pending:
            self._init_pending = False
            with torch.no_grad():
                t = nn.functional.linear(x, self.v / self.v.norm(dim=1, keepdim=True))  # (B, out)
                std = t.std(dim=0) + 1e-6
                self.g.copy_(1.0 / std)
                if self.b is not None:
                    self.b.copy_(-t.mean(dim=0) / std)
        # y = (g / ||v||) * (x v^T) + b: the scale is applied to the (B, out) output rather than to the
        # (out, in) weight, so neither the forward nor the backward makes a full-size copy of the weight.
        if self._caching or torch.is_autocast_enabled(x.device.type):  # frozen, or mixed precision: autograd
            scale = self._cache if self._caching and self._cache is not None else self.scale()
            if self._caching:
                self._cache = scale
            out = nn.functional.linear(x, self.v)  # (B, out)
            return torch.addcmul(self.b, out, scale) if self.b is not None else out * scale
        b = self.b if self.b is not None else torch.zeros_like(self.g)
        return WeightNormLinearFn.apply(x, self.v, self.g, b)[0]  # fp32 training: the hand-written backward

    def scale(self) -> torch.Tensor:
        return self.g / self.v.norm(dim=1)  # (out,)


class WeightNormLinearFn(torch.autograd.Function):
    """y = s * (x v^T) + b with s = g / ||v|| (per output row), with a hand-written backward:

        dx = (dy * s) v,   dg = sum_B(dy * x v^T) / ||v||,   db = sum_B(dy),
        dv = (dy * s)^T x - (s * dg / ||v||) v      (one addmm: no full-size temporaries besides v * c)

    Ten kernels for the backward (autograd's would be about twice as many): on a GPU the MLP step is
    bound by the number of kernels it launches, not by their size (bench/kernels.py).
    """

    generate_vmap_rule = True  # works under torch.func.vmap too (several seeds trained at once: ssgan/training/seeds.py)

    @staticmethod
    def forward(x, v, g, b):  # returns y and what the backward needs (y is the only differentiable output)
        norm = v.norm(dim=1)  # (out,)
        scale = g / norm
        t = x @ v.t()  # (B, out)
        return torch.addcmul(b, t, scale), norm, scale, t

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, v, _, _ = inputs
        _, norm, scale, t = output
        ctx.mark_non_differentiable(norm, scale, t)
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those three (kernels)
        ctx.save_for_backward(x, v, norm, scale, t)

    @staticmethod
    def backward(ctx, dy, *_):
        if dy is None:  # y not used by the loss
            return None, None, None, None
        x, v, norm, scale, t = ctx.saved_tensors
        dys = dy * scale  # (B, out)
        dg = (dy * t).sum(dim=0).div_(norm)  # (out,): the gradient of s, divided by ||v||
        dx = dys @ v if ctx.needs_input_grad[0] else None
        dv = None
        if ctx.needs_input_grad[1]:
            c = (scale * dg).div_(norm)  # (out,): g * dg / ||v||^2
            dv = torch.addmm(v * c.unsqueeze(1), dys.t(), x, beta=-1)  # (out, in)
        db = dy.sum(dim=0)
        return dx, dv, dg, db


@contextlib.contextmanager
def frozen(model: nn.Module):
    """Use `model` as a fixed function: its parameters need no gradients (backward computes only
    what flows to the inputs) and weight-norm scales are computed once, not once per forward."""
    params = [p for p in model.parameters() if p.requires_grad]
    wn = [m for m in model.modules() if isinstance(m, WeightNormLinear)]
    for p in params:
        p.requires_grad_(False)
    for m in wn:
        m._caching = True
    try:
        with nn.utils.parametrize.cached():  # same for torch's parametrizations (conv weight/spectral norm)
            yield model
    finally:
        for p in params:
            p.requires_grad_(True)
        for m in wn:
            m._caching, m._cache = False, None


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


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


def _dropout(p: float) -> list[nn.Module]:
    return [nn.Dropout(p)] if p > 0 else []


def _num_outputs(cfg: ModelConfig, num_classes: int) -> int:
    return num_classes + 1 if cfg.fake_logit == "explicit" else num_classes


def _dense(n_in: int, n_out: int, norm: str, wn_init_std: float = 0.05) -> list[nn.Module]:
    """A dense layer with the chosen normalization (tricks.d_norm / tricks.g_norm)."""
    if norm == "weight":
        return [WeightNormLinear(n_in, n_out, init_std=wn_init_std)]
    if norm == "spectral":
        return [nn.utils.parametrizations.spectral_norm(nn.Linear(n_in, n_out))]
    if norm == "batch":
        return [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out)]
    if norm == "layer":
        return [nn.Linear(n_in, n_out), nn.LayerNorm(n_out)]
    return [nn.Linear(n_in, n_out)]  # none


def _conv(conv: nn.Module, channels: int, norm: str, two_d: bool = True) -> list[nn.Module]:
    """A (transposed) conv layer with the chosen normalization."""
    if norm == "weight":
        return [nn.utils.parametrizations.weight_norm(conv)]
    if norm == "spectral":
        return [nn.utils.parametrizations.spectral_norm(conv)]
    if norm == "batch":
        return [conv, nn.BatchNorm2d(channels)]
    if norm == "instance":
        return [conv, nn.InstanceNorm2d(channels, affine=True)]
    if norm == "layer":
        return [conv, nn.GroupNorm(1, channels)]
    return [conv]  # none


def _norm(choice: str, recipe: str) -> str:
    return recipe if choice == "recipe" else choice


class MLPDiscriminator(nn.Module):
    """Permutation-invariant MLP of Salimans et al. 2016 (MNIST: 784-1000-500-250-250-250-K).

    Weight-normalized dense layers (recipe; tricks.d_norm changes it), Gaussian noise on the input
    (std 0.3) and before every further layer (std 0.5), optional dropout after each hidden layer.
    """

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, tricks: TricksConfig):
        super().__init__()
        norm = _norm(tricks.d_norm, "weight")
        sizes = (math.prod(input_shape), *cfg.d_hidden)
        # noise std on the output of each hidden layer (the input to the next layer or the head)
        stds = cfg.hidden_noise_per_layer or (cfg.hidden_noise,) * len(cfg.d_hidden)
        layers: list[nn.Module] = [nn.Flatten(), GaussianNoise(cfg.input_noise)]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(GaussianNoise(stds[i - 1]))
            layers += [*_dense(n_in, n_out, norm, cfg.wn_init_std), _activation(cfg), *_dropout(tricks.dropout)]
        self.body = nn.Sequential(*layers)
        head_norm = norm if norm in ("weight", "spectral") else "none"  # no batch/layer norm on the logits
        self.head = nn.Sequential(GaussianNoise(stds[-1]), *_dense(sizes[-1], _num_outputs(cfg, num_classes), head_norm,
                                                                 cfg.wn_init_std))
        noise = [m for m in self.modules() if isinstance(m, GaussianNoise)]  # the input's, then each layer's
        self.noise_bank = NoiseBank(noise, list(sizes))
        if cfg.wn_scale == "fixed":  # the hidden layers' g stay at 1 or at their data-dependent init
            for m in self.body.modules():
                if isinstance(m, WeightNormLinear):
                    m.g.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self.noise_bank.draw(len(x), x):  # every noise layer's draws in one call
            features = self.body(x)  # (B, d_hidden[-1])
            return self.head(features), features  # (B, K or K+1), (B, F)


class ClassCondition(nn.Module):
    """The class condition fed to a conditional generator next to the noise: one-hot or a learned
    embedding of the class index. Unconditional generators have `dim == 0` and ignore `c`."""

    def __init__(self, kind: Optional[str], num_classes: int, embed_dim: int = 16):
        super().__init__()
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if kind == "embedding" else None
        self.dim = 0 if kind is None else (embed_dim if self.embed is not None else num_classes)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        if self.dim == 0:
            return z
        if c is None:
            raise ValueError("a conditional generator needs class indices c")
        cond = self.embed(c) if self.embed is not None else nn.functional.one_hot(c, self.num_classes).to(z.dtype)
        return torch.cat([z, cond], dim=1)  # (B, noise_dim + dim)


class MLPGenerator(nn.Module):
    """z ~ U(0, 1)^noise_dim -> softplus dense layers with batch norm (recipe; tricks.g_norm changes it)
    -> weight-normed output layer."""

    def __init__(self, cfg: ModelConfig, output_shape: tuple[int, ...], out_act: nn.Module, tricks: TricksConfig,
                 condition: ClassCondition):
        super().__init__()
        norm = _norm(tricks.g_norm, "batch")
        self.noise_dim, self.output_shape, self.condition = cfg.noise_dim, output_shape, condition
        sizes = (cfg.noise_dim + condition.dim, *cfg.g_hidden)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [*_dense(n_in, n_out, norm), nn.Softplus()]
        layers += [WeightNormLinear(sizes[-1], math.prod(output_shape)), out_act]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(self.condition(z, c)).view(-1, *self.output_shape)  # (B, *output_shape)


class ConvDiscriminator(nn.Module):
    """DCGAN-style: 4x4 convs that halve H and W — strided (recipe) or stride 1 + 2x2 average pooling
    (tricks.downsample=pool) — LeakyReLU (model.activation), batch norm (recipe; tricks.d_norm), linear head."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, tricks: TricksConfig):
        super().__init__()
        c, h, w = _image_shape(input_shape)
        norm, width = _norm(tricks.d_norm, "batch"), cfg.conv_width
        first_norm = norm if norm in ("weight", "spectral") else "none"  # DCGAN: no norm on the first layer

        def down(c_in: int, c_out: int) -> list[nn.Module]:  # (B, c_in, H, W) -> (B, c_out, H/2, W/2)
            if tricks.downsample == "pool":
                return [*_conv(nn.Conv2d(c_in, c_out, 3, 1, 1), c_out, norm), nn.AvgPool2d(2)]
            return _conv(nn.Conv2d(c_in, c_out, 4, 2, 1), c_out, norm)

        def act() -> list[nn.Module]:
            return [_activation(cfg), *_dropout(tricks.dropout)]

        self.body = nn.Sequential(
            GaussianNoise(cfg.input_noise),
            *_conv(nn.Conv2d(c, width, 3, 1, 1), width, first_norm), *act(),  # (B, w, H, W)
            *down(width, 2 * width), *act(),  # (B, 2w, H/2, W/2)
            *down(2 * width, 4 * width), *act(),  # (B, 4w, H/4, W/4)
            nn.Flatten(),  # (B, 4w * H/4 * W/4)
        )
        self.head = nn.Linear(4 * width * (h // 4) * (w // 4), _num_outputs(cfg, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return self.head(features), features


class ConvGenerator(nn.Module):
    """z -> (4w, H/4, W/4) -> two stride-2 transposed convs with batch norm (recipe; tricks.g_norm) -> (C, H, W)."""

    def __init__(self, cfg: ModelConfig, output_shape: tuple[int, ...], out_act: nn.Module, tricks: TricksConfig,
                 condition: ClassCondition):
        super().__init__()
        c, h, w = _image_shape(output_shape)
        norm, width = _norm(tricks.g_norm, "batch"), cfg.conv_width
        self.noise_dim, self.start, self.condition = cfg.noise_dim, (4 * width, h // 4, w // 4), condition
        self.project = nn.Sequential(
            *_dense(cfg.noise_dim + condition.dim, math.prod(self.start), "batch" if norm == "batch" else "none"),
                                     nn.ReLU())
        self.net = nn.Sequential(
            *_conv(nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), 2 * width, norm), nn.ReLU(),  # (B, 2w, H/2, W/2)
            nn.ConvTranspose2d(2 * width, c, 4, 2, 1), out_act,  # (B, C, H, W)
        )

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.net(self.project(self.condition(z, c)).view(-1, *self.start))


def build_discriminator(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                        tricks: Optional[TricksConfig] = None) -> nn.Module:
    tricks = tricks or TricksConfig()
    check_tricks_apply(cfg, tricks)
    cls = ConvDiscriminator if cfg.arch == "conv" else MLPDiscriminator
    return cls(cfg, input_shape, num_classes, tricks)


def build_generator(cfg: ModelConfig, output_shape: tuple[int, ...], scale: str,
                    tricks: Optional[TricksConfig] = None, num_classes: int = 0) -> nn.Module:
    """The generator's output activation matches the data's range: tanh for [-1, 1], sigmoid for [0, 1].
    With `tricks.conditional` it also takes class indices: G(z, c)."""
    tricks = tricks or TricksConfig()
    check_tricks_apply(cfg, tricks)
    out_act = nn.Tanh() if scale == "tanh" else nn.Sigmoid()
    condition = ClassCondition(tricks.condition if tricks.conditional else None, num_classes)
    cls = ConvGenerator if cfg.arch == "conv" else MLPGenerator
    G = cls(cfg, output_shape, out_act, tricks, condition)
    if not cfg.g_bn_scale:  # batch norm as a shift only: the scales stay at 1
        for m in G.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.requires_grad_(False)
    return G


def check_tricks_apply(cfg: ModelConfig, tricks: TricksConfig) -> None:
    """Reject switches that have no meaning for the chosen architecture."""
    if cfg.hidden_noise_per_layer and (cfg.arch != "mlp" or len(cfg.hidden_noise_per_layer) != len(cfg.d_hidden)):
        raise ConfigError(f"model.hidden_noise_per_layer needs model.arch=mlp and one std per hidden layer "
                          f"({len(cfg.d_hidden)} for model.d_hidden), got {list(cfg.hidden_noise_per_layer)}")
    if not cfg.g_bn_scale and tricks.g_norm not in ("recipe", "batch"):
        raise ConfigError(f"model.g_bn_scale=false applies to G's batch norm, but tricks.g_norm={tricks.g_norm}; "
                          "use tricks.g_norm=batch or leave model.g_bn_scale at true")
    if cfg.arch == "conv" and cfg.wn_init_std != ModelConfig.wn_init_std:
        raise ConfigError("model.wn_init_std applies to the mlp discriminator's weight-normed layers; "
                          "remove it for model.arch=conv")
    if cfg.arch == "mlp":
        for key, value in (("tricks.d_norm", tricks.d_norm), ("tricks.g_norm", tricks.g_norm)):
            if value == "instance":
                raise ConfigError(f"{key}=instance does not apply to model.arch=mlp (no spatial dimensions); "
                                  "use batch, layer, weight, spectral or none")
        if tricks.downsample == "pool":
            raise ConfigError("tricks.downsample=pool does not apply to model.arch=mlp (nothing to downsample); "
                              "use model.arch=conv")


def sample_noise(n: int, noise_dim: int, device: torch.device | str,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """z ~ U(0, 1)^noise_dim, as in Salimans et al. 2016."""
    return torch.rand(n, noise_dim, device=device, generator=generator)


def _image_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ConfigError(
            f"model.arch=conv needs images of shape (C, H, W) with H and W divisible by 4; the data has shape "
            f"{tuple(shape)}; use model.arch=mlp"
        )
    return shape[0], shape[1], shape[2]
