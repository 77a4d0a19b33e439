"""Resumable training: everything `fit` changes while it trains, captured at an epoch boundary.

A long run (300 epochs of MNIST-100 take hours on a CPU) should survive Ctrl-C, a SIGTERM from a batch
system or a crash. `fit` captures the state after every epoch (it is also the state the watchdog rolls
back to) and hands it to `on_state` every `train.state_every_s` seconds and when it stops early;
`ssgan train --out DIR` writes it to DIR/train_state.pt and `ssgan train --out DIR --resume` continues
the same MLflow run from it. A resumed run ends as the uninterrupted run would: the same weights, the
same batches and noise draws, the same metrics (on the same kind of device).

The state holds: D, G and the EMA copies (with their update counts), both optimizers, the learning-rate
schedule's step, the three batch-index streams, the global RNGs, the watchdog's counters (and which of
several seeds trained at once it stopped), the epochs done with their metrics and the training seconds spent.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ssgan.config import Config, flatten
from ssgan.errors import ConfigError, SSGANError, disk_full

log = logging.getLogger("ssgan")

STATE_FILE = "train_state.pt"
FORMAT = 1
# Keys that do not change what training computes: a resumed run may change them.
FREE_KEYS = ("tracking.", "tricks.watchdog.", "train.state_every_s", "train.device", "data.root", "data.download")


@dataclass
class Parts:
    """What a training run changes as it goes (train.py's objects)."""

    nets: Any  # train.Nets
    emas: list  # train.EMA: the evaluated average first (when train.ema_decay > 0), then train.ema_compare's
    schedule: Any  # train.Schedule
    streams: list  # train.IndexStream: labeled, unlabeled (D), unlabeled (G)
    watchdog: Any  # watchdog.Watchdog
    device: torch.device
    stopped: dict = field(default_factory=dict)  # seeds trained at once that the watchdog stopped: {index: why}
    shared: Optional[torch.Generator] = None  # under torchrun: the batch-wide draws' stream, in place of the global one


def capture(parts: Parts, epoch: int, history: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """A deep copy of the training state after `epoch` epochs (tensors stay on their device)."""
    nets, wd = parts.nets, parts.watchdog
    state = {
        "format": FORMAT, "epoch": epoch, "history": history, "seconds": seconds, "device_type": parts.device.type,
        "D": nets.D.state_dict(), "G": nets.G.state_dict() if nets.G is not None else None,
        "opt_d": nets.opt_d.state_dict(), "opt_g": nets.opt_g.state_dict() if nets.opt_g is not None else None,
        "emas": [{"model": e.model.state_dict(), "updates": e.updates} for e in parts.emas],
        "schedule_steps": parts.schedule.steps,
        "streams": [s.state_dict() for s in parts.streams],
        "watchdog": {"low_streak": wd.low_streak, "max_streak": wd.max_streak, "finite": wd.finite},
        "stopped": parts.stopped,
        "rng": rng_state(parts),
    }
    return copy.deepcopy(state)


def restore(parts: Parts, state: dict[str, Any]) -> None:
    """Put a captured state back: networks and averages in place, so CUDA graphs stay valid."""
    nets, wd = parts.nets, parts.watchdog
    nets.D.load_state_dict(state["D"])
    nets.opt_d.load_state_dict(state["opt_d"])
    if nets.G is not None:
        nets.G.load_state_dict(state["G"])
        nets.opt_g.load_state_dict(state["opt_g"])
    for ema, saved in zip(parts.emas, state["emas"]):
        ema.model.load_state_dict(saved["model"])
        ema.updates = saved["updates"]
    parts.schedule.steps = state["schedule_steps"] - 1
    parts.schedule.step()  # sets the learning rate of that step
    for stream, saved in zip(parts.streams, state["streams"]):
        stream.load_state_dict(saved)
    for name in ("low_streak", "max_streak", "finite"):
        getattr(wd, name).copy_(state["watchdog"][name])
    parts.stopped.clear()
    parts.stopped.update(copy.deepcopy(state.get("stopped", {})))
    set_rng_state(parts, state["rng"])


def rng_state(parts: Parts) -> dict[str, Optional[torch.Tensor]]:
    """The random streams a resume continues: the global ones, where the batch-wide draws (z, ...) come from;
    under torchrun the stream every rank holds for them takes the place of its device's (each rank's own
    stream is seeded per epoch), so a state continues under any number of processes."""
    shared, cuda = parts.shared, parts.device.type == "cuda"
    return {"cpu": shared.get_state() if shared is not None and not cuda else torch.get_rng_state(),
            "cuda": (shared.get_state() if shared is not None else torch.cuda.get_rng_state(parts.device)) if cuda
            else None}


def set_rng_state(parts: Parts, rng: dict[str, Optional[torch.Tensor]]) -> None:
    torch.set_rng_state(rng["cpu"])
    if rng["cuda"] is not None:
        torch.cuda.set_rng_state(rng["cuda"], parts.device)
    if parts.shared is not None:
        parts.shared.set_state(rng["cuda"] if parts.device.type == "cuda" else rng["cpu"])


class Keeper:
    """A training loop's last good state (what `on_state` receives, what the watchdog rolls back to) and
    its clock. `fit` and `fit_seeds` make one just before their epoch loop; with `resume` it first checks
    the saved state belongs to this run (`key`: the split hash, or `seeds_id`) and puts it back."""

    def __init__(self, parts: Parts, cfg: Config, key: str, epochs_done: int, history: list,
                 resume: Optional[dict[str, Any]], on_state: Optional[Callable[[dict[str, Any]], None]]):
        if resume is not None:
            check_state(resume, cfg, key, parts.device)
            restore(parts, resume)
        self.parts, self.on_state, self.every_s, self.epochs = parts, on_state, cfg.train.state_every_s, cfg.train.epochs
        self.spent = resume["seconds"] if resume is not None else 0.0  # training seconds before this call
        self.good = capture(parts, epochs_done, history, self.spent)
        self.start = self.saved_at = time.perf_counter()
        self.handed: Optional[int] = None  # the epoch of the state last handed to on_state by this process

    def seconds(self) -> float:
        """Training seconds so far, over every part of a resumed run."""
        return self.spent + time.perf_counter() - self.start

    def epoch_done(self, epoch: int, history: list) -> None:
        """After an epoch's metrics were handed on (a state never says an epoch is done whose metrics were
        not): keep its state, and hand it on every `train.state_every_s` seconds (not after the last)."""
        self.good = capture(self.parts, epoch, history, self.seconds())
        if self.on_state and epoch < self.epochs and time.perf_counter() - self.saved_at >= self.every_s:
            self.hand_on()
            self.saved_at = time.perf_counter()

    def hand_on(self) -> None:
        """`on_state(the last good state)`, unless this process handed on that epoch's state already (a second
        copy would push the state before it out of `save_state`'s two)."""
        if self.on_state and self.handed != self.good["epoch"]:
            self.handed = self.good["epoch"]  # tried: a save that failed (a full disk) is not tried again
            self.on_state(self.good)

    def save_on_error(self) -> None:
        """An exception ends training: hand on the last good epoch's state, so that --resume can go on from it.
        A failure to save (the fault may be a full disk) is logged; the first error is the one reported."""
        if self.on_state and self.good["epoch"] > 0:
            try:
                self.hand_on()
            except Exception as e:  # noqa: BLE001
                log.warning("could not save the training state after the error: %s", e)

    def stop(self, reason: str) -> bool:
        """After the loop: a watchdog stop rolls back to the last good epoch (returns True); any early stop
        hands that state on."""
        rolled_back = reason not in ("completed", "interrupted")
        if rolled_back:
            restore(self.parts, self.good)
        if reason != "completed":
            self.hand_on()
        return rolled_back


def interrupted_message(finished: int, saved: int) -> str:
    """What an interrupted run keeps: its finished epochs, and the one a resume trains again when the
    interruption came while an epoch's metrics were being handed on (the state is taken after that)."""
    if saved == finished:
        return f"keeping the {finished} finished epoch(s)"
    return (f"keeping the {finished} finished epoch(s); the training state holds {saved}, so a resume trains "
            f"epoch {finished} again")


def check_state(state: dict[str, Any], cfg: Config, split_hash: str, device: torch.device) -> None:
    """A state continues only the run it came from: same config (but FREE_KEYS), same labeled split,
    same kind of device (the RNG streams differ between CPU and CUDA)."""
    if _seeds_in(state["split_hash"]) != _seeds_in(split_hash):  # a run's state continued as seeds, or the reverse
        raise ConfigError(f"the saved training state is of {_what(state['split_hash'])}, not of {_what(split_hash)}; "
                          "resume with the --seeds or --members it was started with")
    saved, now = state["config"], _fingerprint(cfg)
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
    if changed:
        diff = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:4])
        raise ConfigError(f"the saved training state is of a run with another config: {diff}; resume with the "
                          "same config and --set options, or start a new run elsewhere")
    if state["split_hash"] != split_hash:
        raise ConfigError("the saved training state is of a run on other labeled data (split hash "
                          f"{state['split_hash']}, now {split_hash}); resume on the same data")
    if state["device_type"] != device.type:
        raise ConfigError(f"the training state was saved on {state['device_type']}; resume it on the same kind of "
                          f"device (train.device), not {device.type}")
    if state["epoch"] >= cfg.train.epochs:
        raise ConfigError(f"the saved run already trained all {cfg.train.epochs} epochs; nothing to resume")


def save_state(path: str | Path, state: dict[str, Any], cfg: Config, split_hash: str, **extra: Any) -> None:
    """Write atomically (a crash mid-write leaves the previous state), with what `check_state` checks. The
    state before is kept beside it (`previous(path)`): a latest state that turns out unreadable falls back
    to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        torch.save({**state, "config": _fingerprint(cfg), "split_hash": split_hash, **extra}, tmp)
    except BaseException as e:
        full = disk_full(path, e) if isinstance(e, Exception) else None  # judged before the partial file goes
        tmp.unlink(missing_ok=True)  # a full disk leaves no partial file behind
        if full is not None:
            raise full from None
        raise
    if path.exists():
        os.replace(path, previous(path))
    os.replace(tmp, path)


def previous(path: str | Path) -> Path:
    """Where the state before the latest is kept: train_state.pt -> train_state.prev.pt."""
    path = Path(path)
    return path.with_suffix(".prev" + path.suffix)


def has_state(path: str | Path) -> bool:
    """Whether a state was saved at `path` (the latest, or the one before it)."""
    return Path(path).is_file() or previous(path).is_file()


def remove_state(path: Optional[str | Path]) -> None:
    """Remove a run's saved states, the latest and the one before (a completed run needs neither)."""
    if path is not None:
        for p in (Path(path), previous(path)):
            p.unlink(missing_ok=True)


def load_state(path: str | Path) -> dict[str, Any]:
    """The latest saved state; when it is missing or unreadable (a crash between two writes, a truncated file),
    the one before it, with a warning."""
    path = Path(path)
    prev = previous(path)
    if not has_state(path):
        raise SSGANError(f"no training state at {path}: nothing to resume (`ssgan train --out DIR` writes it while "
                         "training and removes it when the run completes); drop --resume to start a new run")
    try:
        return _read_state(path)
    except SSGANError as e:
        if not prev.is_file():
            raise
        state = _read_state(prev)
        log.warning("%s; continuing from the state before it (%s, epoch %d)", str(e).split(";")[0], prev,
                    state["epoch"])
        return state


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SSGANError(f"no training state at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged or foreign file
        raise SSGANError(f"{path} is not a readable ssgan training state ({type(e).__name__}); delete it and "
                         "start a new run") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SSGANError(f"{path} is not an ssgan training state of this version; delete it and start a new run")
    return state


def describe(path: str | Path) -> Optional[str]:
    """'run R at epoch E of N' (or 'runs R1, R2 ...' for seeds trained at once) for an existing state file,
    else None."""
    if not has_state(path):
        return None
    state = load_state(path)
    runs = state.get("run_ids") or [state.get("run_id")]
    return (f"run{'s' if len(runs) > 1 else ''} {', '.join(map(str, runs))} at epoch {state['epoch']} of "
            f"{state['config'].get('train.epochs')}")


def _seeds_in(key: str) -> int:
    """How many seeds a state's key names: 0 for one run's split hash, else `seeds.seeds_id`'s "seed:hash,..."."""
    return key.count(",") + 1 if ":" in key else 0


def _what(key: str) -> str:
    if not _seeds_in(key):
        return "one run"
    seeds = [part.split(":")[0] for part in key.split(",")]
    return f"{len(seeds)} seeds trained at once ({','.join(seeds)}: --seeds, or --members' training seeds)"


def _fingerprint(cfg: Config) -> dict[str, Any]:
    return {k: v for k, v in flatten(cfg).items() if not k.startswith(FREE_KEYS)}


@contextlib.contextmanager
def exclusive(path: Optional[str | Path], what: str = "training state", other: str = "another --out"):
    """Hold `path`.lock while training from / into the state `path` (None: nothing to hold): a second
    process on the same state (a duplicated `--resume`) would write the file and the logs twice, so it is
    refused with a one-line error. The lock is the operating system's (flock): a killed holder frees it."""
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; the state is still written atomically
        yield
        return
    lock = Path(str(path) + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise SSGANError(f"the {what} {path} is in use by {holder}; wait for it to stop (or stop it), or use "
                             f"{other}") from None
        try:  # who holds it, for the message above; a full disk leaves it unsaid
            f.truncate(0)
            f.write(f"process {os.getpid()}")
            f.flush()
        except OSError:
            pass
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)  # no lock file is left behind


def stop_on_sigterm() -> None:
    """Treat SIGTERM (a batch system's or `timeout`'s stop request) as Ctrl-C: training stops cleanly and
    the state is saved."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
