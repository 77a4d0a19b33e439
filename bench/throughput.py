"""Training throughput against the hardware's own limit (issue 5).

    python bench/throughput.py --models mlp          # CPU, MLP recipe, with epoch-time scaling
    python bench/throughput.py --models conv --sizes "" --steps 10   # conv model, steps only
    python bench/throughput.py --device cuda --set train.precision=bf16 --set train.compile=true
    python bench/throughput.py --device cuda --set train.cuda_graph=false   # eager steps on a GPU

For each model it reports training steps/s, examples/s (steps/s x batch size: the rate at which an
epoch advances), the matmul/conv FLOPs of one step (forward + backward of D and G, counted by
ssgan/training/flops.py, whose docstring states the formula), the achieved FLOP rate, and that rate divided by
the peak FLOP rate of a large dense matmul measured in the same run on the same device (before and
after the steps; the higher of the two counts; on a GPU an 8192^2 matmul in the step's precision,
fp32 or bf16). On a GPU the step is replayed as a CUDA graph unless train.cuda_graph=false. It also times
one epoch at 10k, 30k and 60k unlabeled examples (time per epoch should grow linearly).
With --stacked "1,3,5" it also measures S seeds trained at once (ssgan/training/seeds.py): seed-steps/s (S x
steps/s) against one seed's steps/s, in the same run.

Data are random tensors of MNIST's shape: speed does not depend on pixel values. Results go to
OUT/throughput.json and a table to stdout.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.config import load_config  # noqa: E402
from ssgan.data.splits import UNLABELED, Split  # noqa: E402
from ssgan.training.flops import matmul_peak, step_flops  # noqa: E402
from ssgan.training.graphs import GraphedStep  # noqa: E402
from ssgan.training.seeds import stack_nets  # noqa: E402
from ssgan.training.seeds import train_step as seeds_train_step  # noqa: E402
from ssgan.training.step import build_nets, prepare, resolve_device, train_step  # noqa: E402
from ssgan.training.fit import fit  # noqa: E402

from script import int_list, name_list, run_main  # noqa: E402  (bench/script.py)

MODELS = {"mlp": [], "conv": ["model.arch=conv"]}  # overrides of configs/mnist-100.yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="mlp,conv")
    ap.add_argument("--steps", type=int, default=100, help="timed steps per measurement (5 blocks; best block counts)")
    ap.add_argument("--sizes", default="10000,30000,60000", help="unlabeled set sizes for epoch timing ('' = skip)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--stacked", default="", help="numbers of seeds trained at once to time, e.g. '1,3,5' ('' = skip)")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    models = name_list(args.models, "--models", MODELS)
    sizes = int_list(args.sizes, "--sizes", minimum=1, example="10000,30000") if args.sizes else []
    stacked = int_list(args.stacked, "--stacked", minimum=1, example="1,3,5") if args.stacked else []
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    peak_kw = {}
    if device.type == "cuda":
        bf16 = "train.precision=bf16" in args.overrides
        peak_kw = {"n": 8192, "dtype": torch.bfloat16 if bf16 else torch.float32}
    torch.backends.cuda.matmul.allow_tf32 = "train.precision=tf32" in args.overrides  # the peak in the step's precision
    peak = matmul_peak(device, **peak_kw)
    report = {"device": _device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "overrides": args.overrides, "matmul_peak_gflops": peak / 1e9, "models": {}}
    print(f"{report['device']}: dense matmul peak {peak / 1e9:.1f} GFLOP/s", flush=True)
    for name in models:
        cfg = load_config(ROOT / "configs/mnist-100.yaml",
                          [*MODELS[name], *args.overrides, f"train.device={args.device}", "train.lr_schedule=constant"])
        row = measure_steps(cfg, device, args.steps)
        peak = max(peak, matmul_peak(device, **peak_kw))  # again after the steps: the higher (stricter) peak counts
        report["matmul_peak_gflops"] = peak / 1e9
        row["gflops_per_s"] = row["flops_per_step"] * row["steps_per_s"] / 1e9
        row["fraction_of_peak"] = row["gflops_per_s"] * 1e9 / peak
        if sizes:
            row["epoch_seconds"] = {str(n): epoch_seconds(cfg, n) for n in sizes}
        if stacked:
            row["stacked"] = {}
            for n in stacked:
                r = measure_steps(cfg, device, args.steps, seeds=n)
                row["stacked"][str(n)] = {"seed_steps_per_s": r["steps_per_s"] * n, "cuda_graph": r["cuda_graph"],
                                     "gflops_per_s": r["flops_per_step"] * r["steps_per_s"] / 1e9}
                print(f"{name}, {n} seed(s) at once: {r['steps_per_s'] * n:.2f} seed-steps/s "
                      f"({r['flops_per_step'] * r['steps_per_s'] / 1e9:.1f} GFLOP/s, cuda_graph {r['cuda_graph']})", flush=True)
        report["models"][name] = row
        print(f"{name}: {row['steps_per_s']:.2f} steps/s, {row['examples_per_s']:.0f} examples/s, "
              f"{row['flops_per_step'] / 1e9:.2f} GFLOP/step, {row['gflops_per_s']:.1f} GFLOP/s = "
              f"{100 * row['fraction_of_peak']:.1f}% of peak (cuda_graph {row['cuda_graph']}); "
              f"epoch s by size: {row.get('epoch_seconds')}", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "-".join([device.type, *models, *(o.split(".")[-1].replace("=", "_") for o in args.overrides)])
    (out / f"throughput-{tag}.json").write_text(json.dumps(report, indent=2) + "\n")


def measure_steps(cfg, device: torch.device, steps: int, seeds: int = 0) -> dict:
    """steps/s of train_step on device-resident random batches (after a warm-up); `seeds` > 0: of the
    stacked step of that many seeds (ssgan/training/seeds.py)."""
    torch.manual_seed(0)
    b = cfg.train.batch_size
    lead = (seeds,) if seeds else ()
    x = torch.rand(*lead, 3 * b, 1, 28, 28, device=device)
    y = torch.randint(10, (*lead, b), device=device)
    batches = (x[..., :b, :, :, :], y, x[..., b:2 * b, :, :, :], x[..., 2 * b:, :, :, :])
    if seeds:
        one = [build_nets(cfg, (1, 28, 28), 10, device) for _ in range(seeds)]
        nets, graphed = stack_nets(cfg, one), one[0].graphed
        with FlopCounterMode(display=False) as counter:
            seeds_train_step(copy.deepcopy(nets), cfg, *batches)
        flops = counter.get_total_flops()
        step = lambda *b: seeds_train_step(nets, cfg, *b)  # noqa: E731
    else:
        nets = prepare(build_nets(cfg, (1, 28, 28), 10, device), cfg)
        flops, graphed = step_flops(nets, cfg, *batches), nets.graphed
        step = lambda *b: train_step(nets, cfg, *b)  # noqa: E731
    if graphed:
        step = GraphedStep(step)
    for _ in range(10):  # warm-up (and compilation or graph capture, when on)
        step(*batches)
    _sync(device)
    blocks, per_block = 5, max(1, steps // 5)
    best = float("inf")  # best of 5 blocks, as for the matmul peak: both are limits, not averages
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(per_block):
            losses = step(*batches)
        losses["loss_d"].sum().item()  # one sync per block, as the training loop syncs once per epoch
        best = min(best, (time.perf_counter() - start) / per_block)
    sps = 1.0 / best
    graph = "on" if isinstance(step, GraphedStep) and step.captured else "off"
    if isinstance(step, GraphedStep) and step.failure:
        graph = f"failed: {step.failure}"
    return {"steps_per_s": sps, "examples_per_s": sps * b, "flops_per_step": flops, "batch_size": b,
            "cuda_graph": graph, "timing": f"best of {blocks} blocks of {per_block} steps"}


def epoch_seconds(cfg, n: int) -> float:
    """Wall time of one training epoch (n / batch steps, plus the end-of-epoch evaluation) on n examples."""
    g = torch.Generator().manual_seed(0)
    y = torch.full((n,), UNLABELED, dtype=torch.int64)
    labeled = torch.arange(100)
    y[labeled] = labeled % 10
    split = Split(torch.rand(n, 1, 28, 28, generator=g), y, labeled, torch.rand(10000, 1, 28, 28, generator=g),
                  torch.randint(10, (10000,), generator=g), tuple(str(i) for i in range(10)))
    from ssgan.config import replace

    result = fit(replace(cfg, **{"train.epochs": 1}), split, progress=False)
    return round(result.seconds, 2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


if __name__ == "__main__":
    run_main(main)
