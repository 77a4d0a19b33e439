"""Steps per second of one training run on 1, 2, ... processes under torchrun (ssgan/training/distributed.py).

Each setting trains the same config with the same global batch for a few epochs of `--steps` steps, started by
`torchrun --standalone --nproc-per-node N`; the rate is the median of the epochs after the first (an epoch's
time includes rank 0's evaluation on the test set, the same in every setting). On a CPU the processes share
its cores: `--threads` gives each process cores/N threads (torchrun's default is 1), so 1 x 2 threads and
2 x 1 thread use the same cores. On GPUs each process takes one GPU (NCCL).

    python bench/ddp_steps.py                                   # configs/mnist-100.yaml, CPU, 1 and 2 processes
    python bench/ddp_steps.py --device cuda --procs 1,2,4,8     # on a machine with that many GPUs
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from script import int_list, run_main  # noqa: F401  (bench/ on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def worker(out: str, config: str, overrides: list[str]) -> None:
    """Run by torchrun: train and let rank 0 write the epochs' seconds."""
    from ssgan.config import load_config
    from ssgan.data.splits import load_split
    from ssgan.training.distributed import launched, leave
    from ssgan.training.fit import fit

    cfg = load_config(config, overrides)
    result = fit(cfg, load_split(cfg.data), progress=False)
    if launched().main:
        Path(out).write_text(json.dumps([h["epoch_seconds"] for h in result.history]))
    leave()


def measure(procs: int, threads: int, args, overrides: list[str]) -> float:
    """Steps per second with `procs` processes of `threads` threads each."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "epochs.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
               __file__, "--worker", str(out), "--config", args.config, *sum((["--set", o] for o in overrides), [])]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"error: {procs} process(es) failed:\n{done.stderr[-1500:]}")
        seconds = json.loads(out.read_text())
    return args.steps / statistics.median(seconds[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mnist-100.yaml")
    p.add_argument("--procs", default="1,2", help="process counts, e.g. 1,2")
    p.add_argument("--steps", type=int, default=100, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.config, args.overrides)
    procs = int_list(args.procs, "--procs", minimum=1, example="1,2")
    overrides = [f"train.device={args.device}", f"train.epochs={args.epochs}", f"train.steps_per_epoch={args.steps}",
                 "train.state_every_s=1000000", *args.overrides]
    if "SSGAN_DATA" not in os.environ:
        os.environ["SSGAN_DATA"] = str(ROOT.parent / "shared" / "datasets")
    cores = os.cpu_count() or 1
    settings = [(n, max(1, cores // n)) for n in procs]
    if args.device == "cpu" and 1 in procs and cores > 1:
        settings.insert(0, (1, 1))  # one process on one core: what each of the N processes has
    rows, base = [], None
    for n, threads in settings:
        rate = measure(n, threads, args, overrides)
        base = base or rate
        rows.append(f"| {n} | {threads if args.device == 'cpu' else '-'} | {rate:.1f} | {rate / base:.2f} |")
        print(rows[-1], file=sys.stderr, flush=True)  # progress; the table follows on stdout
    print(f"\n{args.config}, global batch as configured, {args.steps} steps per epoch, device {args.device}, "
          f"{cores} CPU cores\n\n| processes | threads each | steps/s | vs first row |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    run_main(main)
