"""The checkpoint layout: what a trained run's checkpoint.pt holds, written and read here alone.

    config         the resolved config (ssgan.config.to_dict)
    class_names    the K class names, in the classifier's output order
    input_shape    one input's shape, e.g. (1, 28, 28) or (F,)
    classifier     the classifier's state dict: a discriminator, or an `Ensemble` of `members` of them
    generator      the generator's state dict (None in supervised mode)
    preprocess     the training-time preprocessing (ssgan.data.preprocess), so raw inputs can be scored
    feature_names  a table's feature columns, by name (None for arrays and images)
    members        K for an ensemble of K discriminators (ssgan.nets.inference.Ensemble), else None
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ssgan.config import Config, from_dict, to_dict
from ssgan.data.splits import Split
from ssgan.errors import SSGANError
from ssgan.nets.inference import Ensemble
from ssgan.nets.models import build_discriminator, build_generator


def make_checkpoint(cfg: Config, split: Split, classifier: nn.Module, generator: Optional[nn.Module]) -> dict[str, Any]:
    """The checkpoint of a classifier (and generator) trained per `cfg` on `split`."""
    return {
        "config": to_dict(cfg), "class_names": split.class_names, "input_shape": split.input_shape,
        "classifier": classifier.state_dict(),
        "generator": generator.state_dict() if generator is not None else None,
        "preprocess": split.preprocess.to_dict(), "feature_names": split.feature_names,
        "members": len(classifier.members) if isinstance(classifier, Ensemble) else None,
    }


def read_checkpoint(path: str | Path, what: str = "--model") -> dict[str, Any]:
    """Load a checkpoint.pt (tensors and plain types only); a file that is not one is a one-line error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- torch raises several types for a damaged or foreign file
        raise SSGANError(f"{what} {str(path)!r} is not an ssgan checkpoint ({type(e).__name__})") from None


def classifier_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """The trained classifier, in eval mode on the CPU: one discriminator or an `Ensemble` of them."""
    cfg = from_dict(state["config"])
    names, shape = state["class_names"], tuple(state["input_shape"])
    if state.get("members"):
        D = Ensemble([build_discriminator(cfg.model, shape, len(names), cfg.tricks) for _ in range(state["members"])],
                     len(names))
    else:
        D = build_discriminator(cfg.model, shape, len(names), cfg.tricks)
    D.load_state_dict(state["classifier"])
    return D.eval()


def generator_from_checkpoint(state: dict[str, Any]) -> tuple[nn.Module, Config]:
    """The trained generator, in eval mode on the CPU, and the config it was trained with."""
    cfg = from_dict(state["config"])
    if state.get("generator") is None:
        raise SSGANError("this run has no generator (mode=supervised); sample from an ssgan run")
    G = build_generator(cfg.model, tuple(state["input_shape"]), cfg.data.scale, cfg.tricks, len(state["class_names"]))
    G.load_state_dict(state["generator"])
    return G.eval(), cfg
