"""Tune a consistency method's settings on split seeds that the reported comparison does not use.

Each setting (a set of `--set` overrides) trains on every given split seed (`ssgan.training.fit`, no MLflow)
and prints its mean test accuracy; the best goes into the comparison's config. Tuning on seeds 5, 6, ... and
reporting on seeds 0-4 keeps the reported numbers out of the choice.

    python bench/consistency_sweep.py -c configs/digits-20.yaml --mode vat --seeds 5,6 \\
        --grid "ssl.vat_eps=0.5 tricks.gaussian_noise=false" "ssl.vat_eps=2 tricks.gaussian_noise=false"
"""
from __future__ import annotations

import argparse
import statistics
import time

from script import int_list, run_main

from ssgan.config import load_config
from ssgan.data.splits import load_split
from ssgan.training.fit import fit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--mode", required=True)
    p.add_argument("--seeds", default="5,6", help="split seeds to tune on (not the reported ones)")
    p.add_argument("--grid", nargs="+", required=True, help="settings, each a space-separated list of KEY=VALUE")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="applied to every setting, e.g. data.labels=50")
    args = p.parse_args()
    seeds = int_list(args.seeds, "--seeds")
    print(f"| {args.mode} setting | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | s / run |")
    print("|---|" + "---|" * (len(seeds) + 2))
    for setting in args.grid:
        accs, start = [], time.perf_counter()
        for s in seeds:
            cfg = load_config(args.config, [f"mode={args.mode}", *args.overrides, *setting.split(),
                                            f"data.split_seed={s}", f"train.seed={s}"])
            accs.append(fit(cfg, load_split(cfg.data), progress=False).history[-1]["test_accuracy"])
        seconds = (time.perf_counter() - start) / len(seeds)
        print(f"| `{setting}` | " + " | ".join(f"{100 * a:.1f}" for a in accs)
              + f" | {100 * statistics.mean(accs):.1f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    run_main(main)
