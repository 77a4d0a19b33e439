"""Typed, frozen run configuration loaded from YAML.

Every key has a type and a default; an unknown key, a wrong type or a value out of range is a
`ConfigError` that names the key (and, for unknown keys, the allowed ones). The resolved config is
what MLflow records as params and what the checkpoint carries.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from ssgan.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    name: Literal["mnist", "fashion_mnist", "svhn", "cifar10", "digits", "npz", "csv", "parquet", "imagefolder"] = "digits"
    root: Optional[str] = None  # torchvision datasets live under ROOT/<Dataset>/, null = $SSGAN_DATA, else
    #                             ~/.cache/ssgan/datasets (ssgan/data/cache.py); imagefolder: ROOT/<class>/*.png|jpg
    download: bool = False  # torchvision datasets: fetch missing files into ROOT (needs internet)
    path: Optional[str] = None  # the file for name=npz|csv|parquet
    test_path: Optional[str] = None  # csv|parquet: a labeled test file (else labeled rows are held out)
    label_column: str = "label"  # csv|parquet: the label column (empty, NaN or -1 = unlabeled)
    feature_columns: Optional[tuple[str, ...]] = None  # csv|parquet: feature columns; null = all but the label
    unlabeled_dir: str = "unlabeled"  # imagefolder: the subfolder of ROOT whose images have no label
    image_size: Optional[tuple[int, ...]] = None  # imagefolder: [height, width] to resize to; null = the first image's
    color: Literal["gray", "rgb"] = "rgb"  # imagefolder: 1 or 3 channels
    labels: Optional[int] = 100  # size of the labeled subset; null = every labeled training example
    split_seed: int = 0  # draws the labeled subset
    test_fraction: float = 0.2  # npz/csv without X_test: labeled rows held out for testing
    scale: Literal["tanh", "sigmoid"] = "tanh"  # inputs in [-1, 1] + tanh generator, or [0, 1] + sigmoid


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["mlp", "conv"] = "mlp"
    d_hidden: tuple[int, ...] = (1000, 500, 250, 250, 250)  # Salimans et al. 2016, MNIST
    g_hidden: tuple[int, ...] = (500, 500)
    conv_width: int = 64  # channels of the first conv layer (conv arch)
    noise_dim: int = 100
    input_noise: float = 0.3  # std of Gaussian noise added to D's input (training only)
    hidden_noise: float = 0.5  # std of Gaussian noise added to D's hidden layers (mlp)
    hidden_noise_per_layer: tuple[float, ...] = ()  # mlp: one std per hidden layer instead (len(d_hidden) values)
    activation: Literal["relu", "leaky_relu"] = "leaky_relu"
    leaky_slope: float = 0.2
    fake_logit: Literal["fixed_zero", "explicit"] = "fixed_zero"  # K+1-th logit fixed at 0, or learned
    data_init: bool = False  # data-dependent init of D's weight-normed layers (Salimans & Kingma 2016)
    wn_scale: Literal["trainable", "fixed"] = "trainable"  # mlp D: fixed = hidden weight-norm scales are not
    #                                                       trained (Salimans et al.'s MNIST code); the head's are
    wn_init_std: float = 0.05  # mlp D: weight-normed directions v start as N(0, std^2) (Salimans et al.: 0.05 in
    #                            their CIFAR code, 0.1 in their MNIST code). Adam moves v by about lr per
    #                            element, so a larger start turns D's weight directions more slowly.
    g_bn_scale: bool = True  # G's batch norm learns a scale; false = a shift only (Salimans et al.'s g=None)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 100
    steps_per_epoch: Optional[int] = None  # null = one pass over the unlabeled pool
    lr: float = 3e-3  # when not set and model.arch=conv: 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    adam_eps: float = 1e-8  # Adam's epsilon (Salimans et al.'s Theano Adam: sqrt(v + 1e-8), about 1e-4 here)
    lr_schedule: Literal["constant", "linear_decay", "cosine", "step"] = "linear_decay"
    decay_start: float = 0.667  # linear_decay: lr falls linearly to 0 after this fraction of training;
    #                             step: lr is multiplied by step_gamma at this fraction (and again at each multiple)
    step_gamma: float = 0.1
    unsup_weight: float = 1.0  # weight of the real/fake loss in D's objective
    gen_loss: Literal["feature_matching", "non_saturating"] = "feature_matching"
    ema_decay: float = 0.999  # EMA of D's weights used for evaluation; 0 = evaluate raw weights
    ema_compare: tuple[float, ...] = ()  # further EMA decays, each averaged and evaluated every
    #                                     epoch next to ema_decay's (metric test_accuracy_ema<decay>); diagnostic:
    #                                     training and the returned classifier do not change
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "tf32"] = "fp32"  # bf16: forwards under bfloat16 autocast (losses in fp32);
    #                                                   tf32: fp32 tensors, CUDA matmuls on TF32 tensor cores
    compile: bool = False  # torch.compile D and G (first steps are slow while it compiles)
    data_on_device: Optional[bool] = None  # training data as tensors on the device; null = when they fit
    fused_d: bool = True  # D's update in one forward over labeled + unlabeled + generated rows
    #                       (used only when D has no batch norm, whose statistics fusion would mix)
    fused_g: Optional[bool] = None  # G's feature matching in one forward of D over real + generated rows
    #                                 (with fused_d); null = on a CUDA GPU (fewer kernels), off on a CPU
    #                                 (it also computes the real rows' input gradients: more FLOPs)
    cuda_graph: Optional[bool] = None  # the whole step as one CUDA graph, replayed (ssgan/training/graphs.py);
    #                                    null = on when training on a CUDA GPU and the step allows it
    state_every_s: float = 60.0  # `ssgan train --out DIR`: seconds between saves of the training state to
    #                             DIR/train_state.pt (also saved on Ctrl-C or SIGTERM), which `--resume`
    #                             continues from (states are taken between epochs); 0 = after every epoch


@dataclass(frozen=True)
class WatchdogConfig:
    """No early stopping, but a stop (or a warning) when training has visibly failed."""

    action: Literal["stop", "warn", "off"] = "stop"
    d_loss_below: float = 1e-3  # D's loss under this ...
    patience: int = 200  # ... for this many consecutive steps: D has won, G learns nothing
    min_diversity: float = 0.0  # relative diversity of generated samples under this = mode collapse (0 = off)


@dataclass(frozen=True)
class TricksConfig:
    """The stabilizing tricks of the GAN literature, each a switch (docs/training.md)."""

    label_smoothing: bool = False  # one-sided: D's "real" targets ~ U(smoothing_range), fakes stay 0
    smoothing_range: tuple[float, ...] = (0.9, 1.0)
    label_flip: bool = False  # swap a fraction of D's real/fake targets
    flip_fraction: float = 0.05
    gaussian_noise: bool = True  # D's Gaussian noise layers (std: model.input_noise, model.hidden_noise)
    noise_anneal: bool = False  # scale that noise linearly from 1 to 0 over training
    dropout: float = 0.0  # dropout after every hidden layer of D
    d_norm: Literal["recipe", "batch", "instance", "layer", "weight", "spectral", "none"] = "recipe"  # recipe: mlp weight, conv batch
    g_norm: Literal["recipe", "batch", "instance", "layer", "weight", "spectral", "none"] = "recipe"  # recipe: batch
    downsample: Literal["strided", "pool"] = "strided"  # conv D: strided convs, or stride-1 convs + average pooling
    optimizer: Literal["adam", "sgd"] = "adam"  # adam: betas train.beta1, train.beta2; sgd: with `momentum`
    momentum: float = 0.9  # sgd only
    lr_d: Optional[float] = None  # D's learning rate; null = train.lr
    lr_g: Optional[float] = None  # G's learning rate; null = train.lr
    betas_g: Optional[tuple[float, ...]] = None  # G's Adam betas [beta1, beta2]; null = train.beta1, train.beta2
    #                                             (Dai et al. 2017's MNIST code: [0.0, 0.9999], with lr_g 1e-3)
    warmup_steps: int = 0  # linear learning-rate warm-up
    conditional: bool = False  # G(z, c); D learns to put G(z, c) in class c as well as to call it fake (AC-GAN)
    condition: Literal["onehot", "embedding"] = "onehot"
    cond_weight: float = 1.0  # weight of the class term on generated samples, in D's and G's losses
    entropy_weight: float = 0.0  # weight of the entropy of D's class prediction on unlabeled data (0 = off)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)


@dataclass(frozen=True)
class ConsistencyMethod:
    """One consistency method's settings: the weight of its unlabeled term and what goes with it."""

    weight: float = 1.0  # weight of the consistency term in the classifier's loss (after the ramp-up)
    rampup_steps: int = 0  # steps over which that weight rises as exp(-5 (1 - t)^2) from ~0; 0 = none
    entropy_weight: float = 0.0  # + this * the entropy of the prediction on unlabeled data (vat: VAT+EntMin)
    gaussian_noise: Optional[bool] = None  # D's Gaussian noise layers in this mode; null = tricks.gaussian_noise


@dataclass(frozen=True)
class VATMethod(ConsistencyMethod):
    """Virtual adversarial training (Miyato et al. 2018)."""

    gaussian_noise: Optional[bool] = False  # off: the perturbation is the adversarial one (with noise it trains badly)
    eps: float = 2.0  # the L2 norm of the adversarial perturbation of each input (their MNIST value)
    xi: float = 1e-6  # the finite-difference step of the power iteration
    iterations: int = 1  # power iterations


@dataclass(frozen=True)
class ConsistencyConfig:
    """The consistency methods, modes of the same network without a generator (docs/training.md), each with
    its own settings, so that one config serves ssgan and all of them in a comparison."""

    vat: VATMethod = field(default_factory=VATMethod)  # mode=vat (Miyato et al. 2018)
    mean_teacher: ConsistencyMethod = field(default_factory=ConsistencyMethod)  # Tarvainen & Valpola 2017
    pi_model: ConsistencyMethod = field(default_factory=ConsistencyMethod)  # Laine & Aila 2017


@dataclass(frozen=True)
class TrackingConfig:
    uri: Optional[str] = None  # null = $MLFLOW_TRACKING_URI or sqlite:///mlflow.db
    experiment: str = "ssgan"
    run_name: Optional[str] = None
    sample_every: int = 1  # log a grid of generated samples every N epochs (0 = never)
    log_model: bool = True
    # seconds training waits at its end for its records to reach the store; what is left stays in
    # OUT/mlflow-spool for `ssgan sync OUT` (exit status 4)
    end_wait: float = 60.0


@dataclass(frozen=True)
class Config:
    mode: Literal["ssgan", "supervised", "vat", "mean_teacher", "pi_model"] = "ssgan"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tricks: TricksConfig = field(default_factory=TricksConfig)
    ssl: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


CONV_DEFAULT_LR = 1e-4


def modes() -> tuple[str, ...]:
    """The training modes (`mode`): ssgan, the supervised baseline and the consistency methods."""
    return typing.get_args(typing.get_type_hints(Config)["mode"])

# Value ranges, checked in one place: key -> (predicate, what the value must be).
_RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "data.labels": (lambda v: v is None or v >= 1, "a positive integer or null"),
    "data.test_fraction": (lambda v: 0.0 < v < 1.0, "in (0, 1)"),
    "model.d_hidden": (lambda v: len(v) >= 1 and min(v) >= 1, "a non-empty list of positive integers"),
    "model.g_hidden": (lambda v: len(v) >= 1 and min(v) >= 1, "a non-empty list of positive integers"),
    "data.image_size": (lambda v: v is None or (len(v) == 2 and min(v) >= 1), "[height, width] or null"),
    "data.feature_columns": (lambda v: v is None or (len(v) >= 1 and len(set(v)) == len(v)),
                             "a non-empty list of distinct column names or null"),
    "model.conv_width": (lambda v: v >= 1, ">= 1"),
    "tracking.end_wait": (lambda v: v >= 0, ">= 0 (seconds)"),
    "model.noise_dim": (lambda v: v >= 1, ">= 1"),
    "model.input_noise": (lambda v: v >= 0, ">= 0"),
    "model.hidden_noise": (lambda v: v >= 0, ">= 0"),
    "model.hidden_noise_per_layer": (lambda v: all(x >= 0 for x in v), "a list of stds >= 0"),
    "model.leaky_slope": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.wn_init_std": (lambda v: v > 0, "> 0"),
    "train.epochs": (lambda v: v >= 1, ">= 1"),
    "train.state_every_s": (lambda v: v >= 0, ">= 0"),
    "train.batch_size": (lambda v: v >= 1, ">= 1"),
    "train.steps_per_epoch": (lambda v: v is None or v >= 1, ">= 1 or null"),
    "train.lr": (lambda v: v > 0, "> 0"),
    "train.beta1": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.beta2": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.adam_eps": (lambda v: v > 0, "> 0"),
    "train.decay_start": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "train.unsup_weight": (lambda v: v >= 0, ">= 0"),
    "train.ema_decay": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "train.ema_compare": (lambda v: all(0 < x < 1 for x in v) and len(set(v)) == len(v),
                          "a list of distinct decays in (0, 1)"),
    "train.device": (
        lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()),
        "auto, cpu, cuda or cuda:N",
    ),
    "tracking.sample_every": (lambda v: v >= 0, ">= 0"),
    "train.step_gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "tricks.smoothing_range": (lambda v: len(v) == 2 and 0.5 < v[0] <= v[1] <= 1.0,
                               "[low, high] with 0.5 < low <= high <= 1"),
    "tricks.flip_fraction": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "tricks.dropout": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "tricks.momentum": (lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
    "tricks.lr_d": (lambda v: v is None or v > 0, "> 0 or null"),
    "tricks.lr_g": (lambda v: v is None or v > 0, "> 0 or null"),
    "tricks.betas_g": (lambda v: v is None or (len(v) == 2 and all(0 <= b < 1 for b in v)),
                       "[beta1, beta2], each in [0, 1), or null"),
    "tricks.warmup_steps": (lambda v: v >= 0, ">= 0"),
    "tricks.cond_weight": (lambda v: v >= 0, ">= 0"),
    "tricks.entropy_weight": (lambda v: v >= 0, ">= 0"),
    "tricks.watchdog.d_loss_below": (lambda v: v >= 0, ">= 0"),
    "tricks.watchdog.patience": (lambda v: v >= 1, ">= 1"),
    "tricks.watchdog.min_diversity": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    **{f"ssl.{method}.{key}": (lambda v: v >= 0, ">= 0") for method in ("vat", "mean_teacher", "pi_model")
       for key in ("weight", "rampup_steps", "entropy_weight")},
    "ssl.vat.eps": (lambda v: v > 0, "> 0"),
    "ssl.vat.xi": (lambda v: v > 0, "> 0"),
    "ssl.vat.iterations": (lambda v: v >= 1, ">= 1"),
}


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config (or the defaults when `path` is None) and apply `key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(e)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, not {type(raw).__name__}")
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return from_dict(raw)


def parse_override(item: str) -> tuple[str, Any]:
    """`'train.epochs=5'` -> `('train.epochs', 5)`; the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value (e.g. train.epochs=5), got {item!r}")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    return key.strip(), value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def from_dict(raw: dict[str, Any]) -> Config:
    cfg = _build(Config, raw, prefix="")
    train_raw = raw.get("train") or {}
    if "lr" not in train_raw and cfg.model.arch == "conv":  # the notes' default for conv GANs; the MLP recipe: 3e-3
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr=CONV_DEFAULT_LR))
    _check_ranges(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples as lists), YAML/JSON-serialisable."""
    out = dataclasses.asdict(cfg)
    return _listify(out)


def flatten(cfg: Config) -> dict[str, Any]:
    """`{'train.epochs': 10, ...}` — the form logged as MLflow params."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(to_dict(cfg), "")
    return flat


def replace(cfg: Config, **dotted: Any) -> Config:
    """A copy of `cfg` with dotted keys changed and re-validated: `replace(cfg, **{'train.epochs': 2})`."""
    raw = to_dict(cfg)
    for key, value in dotted.items():
        set_dotted(raw, key, value)
    return from_dict(raw)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _listify(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_listify(v) for v in node]
    return node


def _build(cls: type, raw: Any, prefix: str) -> Any:
    section = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{section!r} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix + str(unknown[0])!r}; allowed keys in {section}: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in raw.items()}
    return cls(**kwargs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"config type {tp!r} of {key} is not supported")  # a bug in this file, not user input


def _check_ranges(cfg: Config) -> None:
    flat = flatten(cfg)
    for key, (ok, must_be) in _RANGES.items():
        if not ok(flat[key]):
            raise ConfigError(f"{key} must be {must_be}; got {flat[key]!r}")


def _yaml_problem(e: yaml.YAMLError) -> str:
    """`line 3, column 5: mapping values are not allowed here` (PyYAML's marks count from 0)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or _first_line(e)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
