"""The full MNIST-100 recipe (configs/mnist-100.yaml, 300 epochs) on a GPU, for one split seed or several.

    python bench/gpu_recipe.py --seed 0 --root ../shared/datasets --out bench/results/gpu [--set KEY=VALUE]
    python bench/gpu_recipe.py --seeds 0,1,2 ...     # the seeds trained at once (ssgan/training/seeds.py)
    python bench/gpu_recipe.py --seeds 0,1,2 --members 3 ...   # 3 runs per split seed, and their ensemble
    python bench/gpu_recipe.py --seed 1 --inits 100,200 ...    # or the members' training seeds given

The same jobs as `ssgan train` and `ssgan train --seeds` (ssgan/training/jobs.py: `fit`, or `fit_seeds` for
several runs), recorded in files instead of MLflow (the lent GPU machines have no MLflow): every epoch's metrics go to OUT/mnist-100-seedN.jsonl as they come, the run's summary (test
accuracy and error of the EMA weights after the last epoch: no model selection on the test set; wall
time; steps/s) to OUT/mnist-100-seedN.json, the EMA classifier's test-set class probabilities to
OUT/mnist-100-seedN-probs.npy. `bench/import_runs.py` logs the runs into an MLflow store afterwards.

With --members K each split seed S is trained K times, all at once, with training seeds (init, batch order,
noise draws) S, S + 1000, ..., S + 1000 (K - 1): the first member is the plain run. --inits names the
training seeds instead. Each member is OUT/mnist-100-seedS-initI.*; OUT/mnist-100-seedS-ensemble.json
scores the members' averaged class probabilities (`bench/ensemble.py`: the same for any -probs.npy files).

--state FILE saves the training state there as training goes (every train.state_every_s seconds, and on
SIGTERM or Ctrl-C: ssgan/training/resume.py) and, when FILE exists, continues from it: a run cut off by a call's
time limit goes on in the next call (the per-epoch logs are appended to, after the epochs a killed run
logged past its last saved state are dropped: they are trained again), and ends as it would have. One
process at a time uses FILE (FILE.lock); a second one stops with an error.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.config import load_config, to_dict  # noqa: E402
from ssgan.training.resume import exclusive, has_state, load_state, remove_state, save_state, stop_on_sigterm  # noqa: E402
from ssgan.training.seeds import member_seeds  # noqa: E402
from ssgan.evaluation.metrics import evaluate  # noqa: E402
from ssgan.training.jobs import OneRun, SeedsAtOnce  # noqa: E402
from ssgan.training.step import check_plan  # noqa: E402
from ssgan.nets.inference import predict_proba  # noqa: E402

from script import int_list, run_main  # noqa: E402  (bench/script.py)
from ensemble import ensemble_report  # noqa: E402  (bench/ensemble.py)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0, help="split seed = training seed")
    ap.add_argument("--members", type=int, default=0, help="runs per split seed, training seeds S + 1000 m")
    ap.add_argument("--inits", default="", help="comma-separated training seeds per split seed (default: the split seed)")
    ap.add_argument("--seeds", default="", help="comma-separated seeds, trained at once (overrides --seed)")
    ap.add_argument("--root", default="../shared/datasets", help="folder holding MNIST/raw")
    ap.add_argument("--config", default=str(ROOT / "configs/mnist-100.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench/results/gpu")
    ap.add_argument("--state", default="", help="save the training state to this file; continue from it if it exists")
    args = ap.parse_args()
    with exclusive(Path(args.state) if args.state else None, other="another --state"):  # one process per file
        run(args)


def run(args: argparse.Namespace) -> None:
    split_seeds = int_list(args.seeds, "--seeds") if args.seeds else [args.seed]
    inits = int_list(args.inits, "--inits", example="1000,2000") if args.inits else []
    if args.members and inits:
        sys.exit("error: give --members or --inits, not both")
    if args.members:
        runs = [(s, i) for s in split_seeds for i in member_seeds(s, args.members)]
    else:
        runs = [(s, i) for s in split_seeds for i in inits] if inits else [(s, s) for s in split_seeds]
    by_init = bool(inits) or args.members > 1  # run names carry the training seed
    ensembles = len(runs) > len(split_seeds)  # several runs per split seed: score their ensemble
    seeds = [i for _, i in runs]  # training seeds, one per run
    if len(set(seeds)) != len(seeds):
        sys.exit(f"error: training seeds {seeds} repeat; give --inits distinct seeds per run")
    cfg = load_config(args.config, [f"data.root={args.root}", f"data.split_seed={runs[0][0]}",
                                    f"train.seed={runs[0][1]}", *args.overrides])
    # the same jobs as `ssgan train` and `--seeds`, recorded in files here (no MLflow on the lent GPU machines)
    job = OneRun(cfg) if len(runs) == 1 else SeedsAtOnce(cfg, [s for s, _ in runs], seeds)
    job.prepare()
    cfgs, splits = job.cfgs, job.splits
    loaded = {s: split for (s, _), split in zip(runs, splits)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.config).stem
    names = [f"{stem}-seed{s}-init{i}" if by_init else f"{stem}-seed{s}" for s, i in runs]
    steps, _ = check_plan(cfg, splits[0])
    state_path = Path(args.state) if args.state else None
    state = load_state(state_path) if state_path and has_state(state_path) else None
    saved_epoch = state["epoch"] if state is not None else 0

    def save(s: dict) -> None:
        nonlocal saved_epoch
        save_state(state_path, s, cfg, job.key)
        saved_epoch = s["epoch"]

    if state is not None:
        print(f"continuing after epoch {state['epoch']} from {state_path}", flush=True)
    if state is not None:  # a killed part may have logged epochs after its last saved state: they are trained again
        for name in names:
            _keep_epochs(out / f"{name}.jsonl", state["epoch"])
    logs = [(out / f"{name}.jsonl").open("a" if state else "w") for name in names]
    stop_on_sigterm()
    start = time.perf_counter() - (state["seconds"] if state else 0.0)  # a continued run's clock goes on

    def on_epoch(i: int, epoch: int, metrics: dict, _generator) -> None:
        logs[i].write(json.dumps({"epoch": epoch, "elapsed_s": round(time.perf_counter() - start, 2), **metrics}) + "\n")
        logs[i].flush()

    trained = job.train(state, save if state_path else None, on_epoch, progress=False)
    stop, epochs = job.stop_reason, max(t.epochs_done for t in trained)
    seconds, graph = trained[0].seconds, trained[0].cuda_graph
    if state_path and stop == "completed":
        remove_state(state_path)
    elif state_path and stop == "interrupted":
        print(f"stopped after epoch {epochs}: the same command continues after epoch {saved_epoch} from {state_path}",
              flush=True)
    elif state_path:  # the watchdog: deterministic, so continuing would most likely stop again
        print(f"stopped by the watchdog ({stop}) after epoch {epochs}; {state_path} holds that epoch's "
              "state (delete it to start the run afresh)", flush=True)
    classifiers, histories, stops = ([t.classifier for t in trained], [t.history for t in trained],
                                     [t.stop_reason for t in trained])
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.machine() + " CPU"
    probs = {}
    for (split_seed, seed), cfg, name, split, clf, history, why in zip(runs, cfgs, names, splits, classifiers, histories,
                                                                     stops):
        probs[name] = predict_proba(clf, split.x_test, split.num_classes).numpy()
        np.save(out / f"{name}-probs.npy", probs[name])
        ev = evaluate(clf, split.x_test, split.y_test, split.class_names)
        summary = {"seed": split_seed, "train_seed": seed, "trained_with": seeds, "device": device, "torch": torch.__version__,
                   "overrides": args.overrides, "epochs_done": len(history), "stop_reason": why, "cuda_graph": graph,
                   "train_seconds": round(seconds, 1), "steps": steps * len(history),
                   "steps_per_s": round(steps * len(history) / seconds, 1),
                   "test_accuracy": ev.accuracy, "test_error_pct": round(100 * (1 - ev.accuracy), 3),
                   "test_accuracy_raw_last_epoch": history[-1].get("test_accuracy_raw") if history else None,
                   "confusion_matrix": ev.confusion.tolist(),  # rows = true class: which digits a plateau confuses
                   "largest_confusions": [list(c) for c in ev.confused_pairs()],  # [true, predicted, count]
                   "config": to_dict(cfg)}
        (out / f"{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"{name}: {summary['epochs_done']} epochs in {summary['train_seconds']} s "
              f"({summary['steps_per_s']} steps/s, {len(seeds)} seed(s) at once, cuda_graph {graph}); "
              f"test error {summary['test_error_pct']} % (EMA weights)", flush=True)
    if ensembles:
        for s in split_seeds:
            members = [n for (r, _), n, why in zip(runs, names, stops) if r == s and why in ("completed", "interrupted")]
            members = members or [n for (r, _), n in zip(runs, names) if r == s]  # the watchdog stopped them all
            report = ensemble_report([probs[n] for n in members], members, loaded[s].y_test.numpy())
            (out / f"{stem}-seed{s}-ensemble.json").write_text(json.dumps(report, indent=2) + "\n")
            print(f"{stem}-seed{s}: ensemble of {len(members)} test error {report['ensemble_error_pct']} % "
                  f"(members {report['member_error_pct']})", flush=True)


def _keep_epochs(path: Path, last: int) -> None:
    """Drop a per-epoch log's records after epoch `last`."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if json.loads(line)["epoch"] <= last))


if __name__ == "__main__":
    run_main(main)
