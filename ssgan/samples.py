"""Pictures of what the generator makes: sample grids, and generators loaded back from checkpoints."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from ssgan.config import from_dict
from ssgan.errors import SSGANError
from ssgan.models import build_generator


@torch.no_grad()
def sample_grid(generator: nn.Module, z: torch.Tensor, classes: Optional[torch.Tensor], scale: str,
                nrow: int) -> Optional[np.ndarray]:
    """A (H, W, 3) uint8 grid of G(z[, classes]) in eval mode; None when the samples are not images."""
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    x = generator(z.to(device), None if classes is None else classes.to(device)).float().cpu()
    generator.train(was_training)
    return image_grid(x, scale, nrow)


def image_grid(x: torch.Tensor, scale: str, nrow: int) -> Optional[np.ndarray]:
    """A (H, W, 3) uint8 grid of images x (B, C, H, W) in the generator's range; None when x are not images."""
    from torchvision.utils import make_grid

    if x.dim() != 4:  # (B, C, H, W) images only
        return None
    zoom = -(-32 // x.shape[-1])  # small images (digits are 8x8) are enlarged to >= 32 px, nearest
    x = x.float().cpu().repeat_interleave(zoom, dim=-1).repeat_interleave(zoom, dim=-2)
    lo = -1.0 if scale == "tanh" else 0.0
    grid = make_grid(x, nrow=nrow, normalize=True, value_range=(lo, 1.0), pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def load_checkpoint(ref: str, tracking_uri: Optional[str] = None) -> dict[str, Any]:
    """`ref` is a checkpoint.pt path or an MLflow run id whose artifacts hold checkpoint.pt."""
    path = Path(ref)
    if not path.is_file():
        import mlflow

        from ssgan.tracking import resolve_uri

        mlflow.set_tracking_uri(resolve_uri(tracking_uri))
        try:
            path = Path(mlflow.artifacts.download_artifacts(run_id=ref, artifact_path="checkpoint.pt"))
        except Exception as e:  # MlflowException, OSError: either way the reference does not resolve
            raise SSGANError(f"--model {ref!r} is neither a checkpoint file nor a run with checkpoint.pt in "
                             f"{resolve_uri(tracking_uri)} ({str(e).splitlines()[0][:120]})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SSGANError(f"{str(path)!r} is not an ssgan checkpoint ({type(e).__name__})") from None


def generator_from_checkpoint(state: dict[str, Any]) -> tuple[nn.Module, Any]:
    cfg = from_dict(state["config"])
    if state.get("generator") is None:
        raise SSGANError("this run has no generator (mode=supervised); sample from an ssgan run")
    G = build_generator(cfg.model, tuple(state["input_shape"]), cfg.data.scale, cfg.tricks, len(state["class_names"]))
    G.load_state_dict(state["generator"])
    return G.eval(), cfg


def write_samples(ref: str, out: str | Path, n: int = 64, class_name: Optional[str] = None, seed: int = 0,
                  tracking_uri: Optional[str] = None) -> Path:
    """Write a PNG grid of `n` samples (of one class, for a conditional generator) from a run or checkpoint."""
    from PIL import Image

    state = load_checkpoint(ref, tracking_uri)
    G, cfg = generator_from_checkpoint(state)
    names = [str(c) for c in state["class_names"]]
    classes = None
    if class_name is not None:
        if not G.condition.dim:
            raise SSGANError("--class needs a conditional generator (train with tricks.conditional=true)")
        if class_name not in names:
            raise SSGANError(f"--class {class_name!r} is not a class of this model; classes: {', '.join(names)}")
        classes = torch.full((n,), names.index(class_name), dtype=torch.long)
    elif G.condition.dim:
        classes = torch.arange(n) % len(names)
    z = torch.rand(n, G.noise_dim, generator=torch.Generator().manual_seed(seed))
    grid = sample_grid(G, z, classes, cfg.data.scale, nrow=max(1, int(np.sqrt(n))))
    if grid is None:
        raise SSGANError("this model's data are not images (no (C, H, W) shape); there is no grid to draw")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(out)
    return out
