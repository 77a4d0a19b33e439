"""Run by tests/test_ddp.py, under torchrun or alone: `fit` a config and save this rank's final weights.

    python tests/ddp_fit.py OUT CONFIG [KEY=VALUE ...]   ->  OUT/rank<R>.pt
"""
import sys

import torch

from ssgan.config import load_config
from ssgan.data.splits import load_split
from ssgan.training.distributed import launched, leave
from ssgan.training.fit import fit

out, config, *overrides = sys.argv[1:]
cfg = load_config(config, overrides)
result = fit(cfg, load_split(cfg.data), progress=False)
torch.save({"classifier": result.classifier.state_dict(), "generator": result.generator.state_dict(),
            "history": result.history}, f"{out}/rank{launched().rank}.pt")
leave()
