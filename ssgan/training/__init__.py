"""Training: `train_step` (the D and G updates, ssgan.training.step), the one epoch loop
(ssgan.training.loop) that `fit` (one run) and `fit_seeds` (several seeds at once) run through, the jobs a
command trains (ssgan.training.jobs: one run, seeds at once; where they are recorded is the caller's), and what
the loop uses: the tricks, the watchdog, resumable state, CUDA graphs, batches and weight averages."""
from ssgan.training.batches import BatchSource, IndexStream
from ssgan.training.ema import EMA, ema_metric
from ssgan.training.fit import TrainResult, fit
from ssgan.training.jobs import Job, OneRun, SeedsAtOnce, Trained
from ssgan.training.loop import EpochLoop
from ssgan.training.resume import STATE_FILE, exclusive, load_state, save_state, stop_on_sigterm
from ssgan.training.seeds import SeedsResult, fit_seeds, member_seeds, seeds_id
from ssgan.training.step import (Nets, build_nets, check_plan, d_objective, g_objective, prepare, resolve_device,
                                 train_step)
from ssgan.training.tricks import Schedule
from ssgan.training.watchdog import Watchdog

__all__ = ["Job", "OneRun", "SeedsAtOnce", "Trained", "fit", "TrainResult", "fit_seeds", "SeedsResult", "seeds_id", "member_seeds", "train_step", "d_objective", "g_objective",
           "Nets", "build_nets", "prepare", "check_plan", "resolve_device", "EpochLoop", "EMA", "ema_metric",
           "Schedule", "BatchSource", "IndexStream", "Watchdog", "STATE_FILE", "save_state", "load_state",
           "exclusive", "stop_on_sigterm"]
