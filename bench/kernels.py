"""How many kernels one training step launches (issue 5: the CUDA-graphed MLP step is bound by them).

    python bench/kernels.py                          # CPU: operator count, the proxy for kernels
    python bench/kernels.py --device cuda            # CUDA: kernels counted by the profiler
    python bench/kernels.py --set train.fused_g=false --set tricks.gaussian_noise=false

A replayed CUDA graph still runs every kernel of the step one after another; for the MNIST MLP each
kernel takes a few microseconds whatever its size, so the step's time on a GPU is about (kernels x a
few us). On the CPU the script counts the top-level ATen operators that compute something (views and
allocations left out): each launches at least one kernel on a GPU. On CUDA it counts the kernels
themselves (the GPU activity records of one eager step). Batches are random tensors of MNIST's shape.
Writes OUT/kernels.json and prints the most frequent operators.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.config import load_config  # noqa: E402
from ssgan.training.step import build_nets, prepare, resolve_device, train_step  # noqa: E402

from script import run_main  # noqa: E402  (bench/script.py)

# ATen operators that only make views or allocate: no kernel
NO_KERNEL = {"aten::view", "aten::detach", "aten::as_strided", "aten::t", "aten::transpose", "aten::slice",
             "aten::split", "aten::split_with_sizes", "aten::alias", "aten::unsqueeze", "aten::squeeze",
             "aten::expand", "aten::lift_fresh", "aten::result_type", "aten::empty", "aten::empty_like",
             "aten::empty_strided", "aten::reshape", "aten::_reshape_alias", "aten::narrow", "aten::select",
             "aten::resolve_conj", "aten::resolve_neg", "aten::permute", "aten::flatten", "aten::_unsafe_view",
             "aten::numpy_T", "aten::chunk", "aten::unbind"}


def count(cfg, device: torch.device) -> dict:
    nets = prepare(build_nets(cfg, (1, 28, 28), 10, device), cfg)
    b = cfg.train.batch_size

    def batch():
        return (torch.rand(b, 1, 28, 28, device=device), torch.randint(10, (b,), device=device),
                torch.rand(b, 1, 28, 28, device=device), torch.rand(b, 1, 28, 28, device=device))

    for _ in range(3):  # warm-up: optimizer state, cuBLAS handles
        train_step(nets, cfg, *batch())
    inputs = batch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        train_step(nets, cfg, *inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    top = [e for e in events if e.name.startswith("aten::") and e.name not in NO_KERNEL
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    ops = collections.Counter(e.name for e in top)
    result = {"device": str(device), "operators": len(top), "by_operator": dict(ops.most_common())}
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        result["kernels"] = len(kernels)
        result["by_kernel"] = dict(collections.Counter(e.name[:80] for e in kernels).most_common(25))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "mnist-100.yaml"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None, help="folder for kernels.json (default: print only)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    cfg = load_config(args.config, [*args.overrides, f"train.device={device}"])
    result = {"overrides": args.overrides, "torch": torch.__version__, **count(cfg, device)}
    what = "kernels" if "kernels" in result else "operators"
    print(f"{result[what]} {what} per training step ({device}, {' '.join(args.overrides) or 'defaults'}); "
          f"{result['operators']} top-level ATen operators")
    for name, n in list(result.get("by_kernel", result["by_operator"]).items())[:15]:
        print(f"  {n:4d}  {name}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        tag = "-".join(o.replace("=", "_") for o in args.overrides)
        (Path(args.out) / f"kernels-{device.type}{'-' + tag if tag else ''}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    run_main(main)
