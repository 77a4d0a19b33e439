"""One training run on several processes: `torchrun --nproc-per-node N -m ssgan train ...`, data-parallel.

torchrun starts N processes (ranks) and tells each its rank in the environment; `join` puts them in one process
group (NCCL on CUDA GPUs, gloo on CPUs). The maths stays that of one process with the same global batch:

* `train.batch_size` is the global batch. Every rank draws the same batch indices (the same seeded streams) and
  trains on its own contiguous shard of them (`World.shard`); D and G are wrapped in DistributedDataParallel,
  which averages their gradients over the ranks, so a mean loss over the shards is the mean over the batch.
* Random draws that belong to the whole batch (the noise z, a conditional G's classes, the "is real" targets'
  smoothing and flips) come from one stream every rank holds (`Shard.generator`): each rank draws the global batch
  and keeps its shard. Random draws inside the networks (dropout, Gaussian noise layers) come from the rank's own
  stream, seeded from the training seed, the rank and the epoch (`local_seed`), so a resume draws them again.
* Batch norm is synchronised over the ranks: torch's SyncBatchNorm on GPUs, `RanksBatchNorm` (the same
  statistics, by two all-reduces) on CPUs, where SyncBatchNorm does not run. Feature matching compares the
  means over the global batch (`Shard.gather`).
* The step's losses are averaged over the ranks (what is logged and what the watchdog sees); the epoch's metrics
  are computed on rank 0 and sent to the others; the watchdog's verdict and a stop request (Ctrl-C, SIGTERM
  on any rank) are one decision, taken at the same step on every rank (`World.agree`).
* Rank 0 alone talks to MLflow and writes the summary, checkpoint, model and training state (ssgan/tracking/run.py);
  every rank resumes from that state.

Reference: Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training".
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import nn

from ssgan.errors import ConfigError, SSGANError

log = logging.getLogger("ssgan")


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job: rank `rank` of `size` (1: a plain single-process run)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank on this machine: which GPU it trains on

    @property
    def main(self) -> bool:
        """Rank 0: the one that records the run."""
        return self.rank == 0

    @property
    def spread(self) -> bool:
        return self.size > 1

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch (its first dimension)."""
        if not self.spread:
            return rows
        n = len(rows) // self.size
        return rows[self.rank * n : (self.rank + 1) * n]

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """`t` averaged over the ranks (every rank gets the same tensor)."""
        if not self.spread:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t / self.size

    def agree(self, reason: Optional[str]) -> tuple[Optional[str], bool]:
        """One decision for every rank: rank 0's watchdog verdict, and whether any rank was asked to stop."""
        if not self.spread:
            return reason, False
        views: list = [None] * self.size
        dist.all_gather_object(views, (reason, STOP.requested))
        return views[0][0], any(v[1] for v in views)

    def share(self, obj):
        """Rank 0's `obj`, on every rank."""
        if not self.spread:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def launched() -> World:
    """The world torchrun (or any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK) started this process in."""
    env = os.environ
    try:
        return World(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
    except ValueError:
        raise SSGANError(f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}, LOCAL_RANK="
                         f"{env.get('LOCAL_RANK')!r} are not integers; start ssgan under torchrun, or unset them") from None


def join(device: torch.device) -> tuple[World, torch.device]:
    """Join the torchrun job's process group (once; a single process joins nothing) and return this rank's
    world and training device (cuda:LOCAL_RANK on GPUs)."""
    world = launched()
    if not world.spread:
        return world, device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank {world.rank} is local rank {world.local_rank} but this machine has "
                              f"{torch.cuda.device_count()} GPU(s); start at most that many processes per node")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return world, device


def leave() -> None:
    """Leave the process group at the end of a torchrun run: when every rank is done (rank 0 may still be
    recording), so that none tears down its connections while another still uses them."""
    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(RuntimeError):  # a rank that is gone: nothing to wait for
            dist.barrier()
        dist.destroy_process_group()


def check_batch(batch_size: int) -> None:
    """The global batch must split evenly over the ranks."""
    world = launched()
    if world.spread and batch_size % world.size:
        raise ConfigError(f"train.batch_size={batch_size} is the global batch and must split evenly over the "
                          f"{world.size} processes; choose a multiple of {world.size}")


def local_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of rank `rank`'s own random stream (dropout, Gaussian noise) in epoch `epoch`."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (1 << 63)


# -- the step's view of the world -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """What `train_step` needs of the world: random draws of the whole batch, cut to this rank's rows, and
    rows gathered from every rank. The default is a single process, where both are the plain operations."""

    world: World = World()
    generator: Optional[torch.Generator] = None  # the stream every rank holds (None: the global one)

    def draw(self, n: int, make: Callable[[int, Optional[torch.Generator]], Any]) -> Any:
        """`make(rows, generator)` (a tensor, or a tuple of tensors or None) for the global batch, cut to
        this rank's `n` rows."""
        drawn = make(n * self.world.size, self.generator)
        if not self.world.spread:
            return drawn
        if isinstance(drawn, tuple):
            return tuple(None if t is None else self.world.shard(t) for t in drawn)
        return self.world.shard(drawn)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Every rank's rows, in rank order (gradients flow back to this rank's rows)."""
        if not self.world.spread:
            return rows
        placed = rows.new_zeros((self.world.size, *rows.shape))
        placed[self.world.rank] = rows
        return all_reduce(placed).flatten(0, 1)


class _AllReduce(torch.autograd.Function):
    """Sum over the ranks, differentiable: every rank's output depends on every rank's input, so the
    gradient of an input is the sum of the ranks' output gradients."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(t: torch.Tensor) -> torch.Tensor:
    return _AllReduce.apply(t)


class RanksBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch on CPUs (torch's SyncBatchNorm runs on GPUs only): the mean and the
    biased variance of every rank's rows, by two differentiable all-reduces. In eval mode: plain batch norm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = x.numel() // x.shape[1] * dist.get_world_size()  # the shards are of equal size
        mean = all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * count / max(count - 1, 1), m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + (self.bias.view(shape) if self.bias is not None else 0)
        return y


def sync_batch_norm(net: nn.Module, device: torch.device) -> nn.Module:
    """`net` with its batch norm layers synchronised over the ranks, sharing their parameters and buffers
    (optimizers built over `net` stay valid)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(net)
    for name, child in net.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            synced = RanksBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            synced.weight, synced.bias = child.weight, child.bias
            synced.running_mean, synced.running_var = child.running_mean, child.running_var
            synced.num_batches_tracked = child.num_batches_tracked
            synced.train(child.training)
            setattr(net, name, synced)
        else:
            sync_batch_norm(child, device)
    return net


def data_parallel(net: Optional[nn.Module], device: torch.device) -> Optional[nn.Module]:
    """`net` wrapped in DistributedDataParallel: rank 0's weights at the start, gradients averaged over the
    ranks in backward. Buffers are not broadcast: synchronised batch norm keeps them equal."""
    if net is None:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False)


def shared_stream(device: torch.device) -> torch.Generator:
    """A generator on `device` that starts where the global stream of `device` is now: every rank seeded the
    same, so it is the same on every rank (and it continues the draws a single process would make)."""
    gen = torch.Generator(device)
    gen.set_state(torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state())
    return gen


# -- stop requests ----------------------------------------------------------------------------------------------
class _StopRequests:
    """Ctrl-C or SIGTERM while the ranks train: noted, not raised, so that no rank leaves while the others
    wait for it in a collective; `World.agree` tells every rank at the same step."""

    requested = False

    @contextlib.contextmanager
    def deferred(self, world: World) -> Iterator[None]:
        if not world.spread:
            yield
            return
        self.requested = False
        before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in before:
            signal.signal(s, self._note)
        try:
            yield
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)

    def _note(self, signum, frame) -> None:
        self.requested = True


STOP = _StopRequests()


def rank_lost(e: BaseException, world: World, epochs_saved: int) -> Optional[SSGANError]:
    """The one line for a collective that failed because another rank's process ended, else None. From then on
    a SIGTERM does not cut the report short: torchrun's agent sends it to the ranks left once one has died (and
    kills them 30 s later)."""
    if not world.spread or not isinstance(e, RuntimeError) or isinstance(e, SSGANError):
        return None
    text = str(e).lower()
    if not any(s in text for s in ("connection", "closed", "reset", "broken pipe", "timed out", "nccl", "gloo")):
        return None
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    what = str(e).splitlines()[0].split("] ", 1)[-1][:120]  # gloo's message without its source file
    return SSGANError(f"rank {world.rank}: another process of this torchrun job stopped ({what}); the training state "
                      f"after epoch {epochs_saved} is saved: run the same torchrun command with --resume to go on")
