"""What one training step of each method costs, measured interleaved so that the host's drift (these VMs
move by ±20 % within minutes) falls on every method alike.

Each round trains every (method, config) for one short epoch of `--steps` updates on the real data (no
MLflow), one after the other; the median over the rounds of each method's seconds per step (the epoch's
evaluation on the test set included) is reported, with the ratio to the first method's. Use it beside
bench/mnist_budget.sh, whose runs follow each other and so each meet the host at a different speed.

    OMP_NUM_THREADS=2 python bench/mode_steps.py --data-root ../shared/datasets
"""
from __future__ import annotations

import argparse
import statistics

from script import run_main

from ssgan.config import load_config
from ssgan.data.splits import load_split
from ssgan.training.fit import fit

METHODS = ("ssgan=configs/mnist-100-fast.yaml,vat=configs/mnist-100-vat.yaml,"
           "mean_teacher=configs/mnist-100-mean-teacher.yaml,supervised=configs/mnist-100-fast.yaml")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=METHODS, help="comma-separated MODE=CONFIG")
    p.add_argument("--steps", type=int, default=200, help="updates per timed epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-root", help="data.root for every config")
    args = p.parse_args()
    methods = [m.split("=", 1) for m in args.methods.split(",") if m.strip()]
    if not methods or any(len(m) != 2 for m in methods) or args.steps < 1 or args.rounds < 1:
        raise SystemExit("error: --methods takes MODE=CONFIG,... ; --steps and --rounds are >= 1")
    base = ["train.epochs=1", f"train.steps_per_epoch={args.steps}"]
    if args.data_root:
        base.append(f"data.root={args.data_root}")
    cfgs = {mode: load_config(path, [f"mode={mode}", *base]) for mode, path in methods}
    split = load_split(next(iter(cfgs.values())).data)  # every config reads the same split
    per_step: dict[str, list[float]] = {mode: [] for mode in cfgs}
    for r in range(args.rounds):
        for mode, cfg in cfgs.items():
            seconds = fit(cfg, split, progress=False).history[-1]["epoch_seconds"]
            per_step[mode].append(seconds / args.steps)
            print(f"round {r + 1}: {mode} {1000 * seconds / args.steps:.1f} ms / step", flush=True)
    first = statistics.median(per_step[methods[0][0]])
    print(f"\n| method | ms / step (median of {args.rounds}) | vs {methods[0][0]} |")
    print("|---|---|---|")
    for mode, values in per_step.items():
        m = statistics.median(values)
        print(f"| {mode} | {1000 * m:.1f} | {m / first:.2f}x |")


if __name__ == "__main__":
    run_main(main)
