"""Pictures of what a trained generator makes (`ssgan sample`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ssgan.errors import SSGANError
from ssgan.evaluation.figures import sample_grid
from ssgan.serving.checkpoint import generator_from_checkpoint
from ssgan.serving.predict import load_checkpoint


def write_samples(ref: str, out: str | Path, n: int = 64, class_name: Optional[str] = None, seed: int = 0) -> Path:
    """Write a PNG grid of `n` samples (of one class, for a conditional generator) from a model reference
    (`ssgan.serving.predict.load_checkpoint`: run id, models:/ or runs:/ URI, model folder or checkpoint.pt)."""
    from PIL import Image

    state = load_checkpoint(ref)
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
