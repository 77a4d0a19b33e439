"""Fused vs separate D passes, timed in one process: blocks of 10 MNIST-MLP steps of each variant
interleaved with timings of the matmul peak, so machine drift hits both alike (docs/results/speed.md).

    OMP_NUM_THREADS=2 python bench/fused_ab.py
"""
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.config import load_config, replace  # noqa: E402
from ssgan.training.flops import matmul_peak, step_flops  # noqa: E402
from ssgan.training.step import build_nets, train_step  # noqa: E402

base = load_config(ROOT / "configs/mnist-100.yaml", ["train.lr_schedule=constant", "train.device=cpu"])
variants = {"fused": base, "separate": replace(base, **{"train.fused_d": False})}
x, y = torch.rand(300, 1, 28, 28), torch.randint(10, (100,))
batches = (x[:100], y, x[100:200], x[200:])
nets = {}
for name, cfg in variants.items():
    torch.manual_seed(0)
    nets[name] = build_nets(cfg, (1, 28, 28), 10, torch.device("cpu"))
flops = step_flops(nets["fused"], base, *batches)


def block(name: str, n: int = 10) -> float:
    start = time.perf_counter()
    for _ in range(n):
        out = train_step(nets[name], variants[name], *batches)
    float(out["loss_d"])
    return (time.perf_counter() - start) / n


for name in variants:
    block(name, 5)  # warm-up
times: dict[str, list[float]] = {name: [] for name in variants}
peaks = []
for _ in range(8):
    peaks.append(matmul_peak(torch.device("cpu"), seconds=0.5))
    for name in variants:
        times[name].append(block(name))
peak = max(peaks)
print(f"{flops / 1e9:.2f} GFLOP/step; matmul peak {peak / 1e9:.0f} GFLOP/s (max of 8), {torch.get_num_threads()} threads")
for name, t in times.items():
    t.sort()
    best, median = t[0], t[len(t) // 2]
    print(f"{name}: best {1e3 * best:.1f} ms = {flops / best / peak:.0%} of peak, "
          f"median {1e3 * median:.1f} ms = {flops / median / peak:.0%}")
