"""The whole training step as one CUDA graph, captured once and replayed every step (train.cuda_graph).

An MLP step launches a few hundred small kernels. On a GPU, launching them one at a time from Python
takes longer than running them, so the GPU idles between kernels. A CUDA graph records the step once
(D's update, G's update, both Adam updates and the loss bookkeeping) and replays it with one launch.

What replaying needs, and where it comes from:
* the same tensors every step: inputs are copied into fixed buffers before each replay, and batches
  always have the same shape (`IndexStream` yields full batches only);
* no host sync inside the step: losses stay on the device (train_step returns them detached, the
  bookkeeping updates its tensors in place);
* optimizer state and learning rate on the device: Adam with `capturable=True` and the learning rate
  as a device tensor that the schedule fills in place (`build_nets`, `tricks.set_lr`);
* fresh randomness per replay (z, D's Gaussian noise, smoothed targets): PyTorch's graph-safe CUDA RNG
  advances its offset at every replay;
* warm-up: the first steps run eagerly on a side stream (cuBLAS workspaces, Adam's lazily made state);
  then one step is captured and replayed, so no step is lost or repeated.
If the capture fails, training goes on eagerly with a one-line warning saying why.
"""
from __future__ import annotations

import logging
from typing import Callable, Optional

import torch

from ssgan.config import Config
from ssgan.errors import ConfigError
from ssgan.training.distributed import World

log = logging.getLogger("ssgan")


def use_cuda_graph(cfg: Config, device: torch.device, world: World = World()) -> bool:
    """train.cuda_graph: true (must work, else a ConfigError naming the reason), false, or null
    (= on when the device is a CUDA GPU and nothing in the config changes the step from step to step)."""
    reason = _blocker(cfg, device, world)
    if cfg.train.cuda_graph is None:
        return reason is None
    if cfg.train.cuda_graph and reason:
        raise ConfigError(f"train.cuda_graph=true but {reason}; set train.cuda_graph=false (or null)")
    return bool(cfg.train.cuda_graph)


def _blocker(cfg: Config, device: torch.device, world: World) -> Optional[str]:
    if world.spread:  # DDP's gradient all-reduce and the batch-wide draws are not captured here
        return f"torchrun runs {world.size} processes (a DistributedDataParallel step is not captured)"
    if cfg.train.compile:  # seen on an H200 (torch 2.11): the compiled step fails to capture; use one or the other
        return "train.compile is on (a compiled step does not capture: use train.compile or CUDA graphs)"
    if device.type != "cuda":
        return f"the training device is {device.type} (CUDA graphs need a CUDA GPU)"
    if cfg.tricks.noise_anneal:
        return "tricks.noise_anneal changes the noise scale every step (a graph replays a fixed one)"
    if cfg.tricks.optimizer != "adam":
        return f"tricks.optimizer={cfg.tricks.optimizer} keeps its learning rate on the host (only adam is captured)"
    return None


class GraphedStep:
    """Call like `step_fn(*inputs)`; returns its dict of tensors. After warm-up the returned tensors are
    the graph's own outputs: read (or copy) them before the next call, which overwrites them."""

    def __init__(self, step_fn: Callable[..., dict[str, torch.Tensor]], warmup: int = 3):
        if warmup < 1:
            raise ValueError("warmup must be at least 1 (lazily made state must exist before the capture)")
        self.step_fn, self.warmup, self.calls = step_fn, warmup, 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_in: list[Optional[torch.Tensor]] = []
        self.static_out: dict[str, torch.Tensor] = {}
        self.failure: Optional[str] = None  # why the capture failed, if it did (then every step is eager)

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def __call__(self, *inputs: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.graph is not None:
            for static, x in zip(self.static_in, inputs):
                if static is not None:
                    static.copy_(x)
            self.graph.replay()
            return self.static_out
        if self.failure is not None:  # eager from here on, on the current stream
            return self.step_fn(*inputs)
        self.calls += 1
        if self.calls <= self.warmup:
            return self._warm(*inputs)
        return self._capture(*inputs)

    def _warm(self, *inputs):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = self.step_fn(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def _capture(self, *inputs):
        self.static_in = [None if x is None else x.clone() for x in inputs]
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out = self.step_fn(*self.static_in)
        except Exception as e:  # noqa: BLE001 -- any capture error: train on, eagerly
            self.failure = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("CUDA graph capture failed (%s); training continues without graphs", self.failure)
            torch.cuda.synchronize()
            return self._warm(*inputs)
        self.graph, self.static_out = graph, out
        graph.replay()
        return out
