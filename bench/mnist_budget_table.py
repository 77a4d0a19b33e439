"""The time-to-accuracy table of the MNIST-100 budget comparison (bench/mnist_budget.sh): one row per method.

Reads the finished runs of one MLflow experiment: each network's per-epoch `test_accuracy` (the evaluated
weights, EMA where the config has one) and `epoch_seconds` (training and that epoch's evaluation), whose running
sum is the time axis; LabelSpreading's one fit (`run_seconds`). For every method, over its split seeds: the test
accuracy of the last epoch finished by each time mark, the time each accuracy level was first reached, and the
final accuracy with the time used.

    python bench/mnist_budget_table.py --tracking-uri sqlite:///bench/results/mlflow.db --experiment mnist-budget
"""
from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

from script import run_main

MARKS = (60, 120, 300, 600, 900)  # seconds
LEVELS = (0.90, 0.95, 0.97, 0.98)
ORDER = ("ssgan", "vat", "mean_teacher", "pi_model", "supervised", "label_spreading")


def curves(client, experiment_id: str) -> dict[str, dict[int, list[tuple[float, float]]]]:
    """method -> split seed -> [(seconds since the start, test accuracy)], one point per epoch (one per fit)."""
    out: dict[str, dict[int, list[tuple[float, float]]]] = defaultdict(dict)
    for run in client.search_runs([experiment_id], "attributes.status = 'FINISHED'"):
        params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
        if "test_accuracy" not in metrics:  # a comparison's parent run
            continue
        seed = int(params.get("data.split_seed", tags.get("split_seed", -1)))
        if "method" in tags and tags["method"] not in ("ssgan", "supervised"):  # a scikit-learn baseline
            out[tags["method"]][seed] = [(metrics["run_seconds"], metrics["test_accuracy"])]
            continue
        accs = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "test_accuracy")}
        secs = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "epoch_seconds"))
        t, points = 0.0, []
        for step, s in secs:
            t += s
            points.append((t, accs[step]))
        out[params["mode"]][seed] = points
    return out


def at(points: list[tuple[float, float]], mark: float) -> float | None:
    """Accuracy of the last epoch finished by `mark` seconds (None: none was)."""
    done = [a for t, a in points if t <= mark]
    return done[-1] if done else None


def reached(points: list[tuple[float, float]], level: float) -> float | None:
    return next((t for t, a in points if a >= level), None)


def mean_percent(values: list[float | None]) -> str:
    """The mean accuracy in %, "–" where a seed has none."""
    if not values or any(v is None for v in values):
        return "–"
    return f"{100 * statistics.mean(values):.1f}"


def in_order(data: dict) -> list[str]:
    """The methods of `data`, ssgan first, then as ORDER lists them."""
    return sorted(data, key=lambda m: ORDER.index(m) if m in ORDER else len(ORDER))


def first_reached(times: list[float | None]) -> str:
    """When each seed first reached a level, in seed order ("–": never)."""
    return " / ".join("–" if t is None else f"{t:.0f}" for t in times) + (" s" if any(t is not None for t in times) else "")


def table(data: dict[str, dict[int, list[tuple[float, float]]]]) -> str:
    head = ("| method | seeds | " + " | ".join(f"{m // 60} min" for m in MARKS)
            + " | final ± std | time used | " + " | ".join(f"to {100 * lv:.0f} %" for lv in LEVELS) + " |")
    lines = [head, "|---|---|" + "---|" * (len(MARKS) + 2 + len(LEVELS))]
    for method in in_order(data):
        runs = [data[method][s] for s in sorted(data[method])]
        finals = [p[-1][1] for p in runs]
        std = statistics.stdev(finals) * 100 if len(finals) > 1 else 0.0
        cells = [mean_percent([at(p, m) for p in runs]) for m in MARKS]
        cells += [f"{100 * statistics.mean(finals):.2f} ± {std:.2f}", f"{statistics.mean(p[-1][0] for p in runs):.0f} s"]
        cells += [first_reached([reached(p, lv) for p in runs]) for lv in LEVELS]
        lines.append(f"| {method} | {','.join(map(str, sorted(data[method])))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(data: dict[str, dict[int, list[tuple[float, float]]]], path: str, budget: float) -> None:
    """Test accuracy against training time, one colour per method: each seed's curve, LabelSpreading's fits
    as points; the budget as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for i, method in enumerate(in_order(data)):
        colour = f"C{i}"
        for j, seed in enumerate(sorted(data[method])):
            t, a = zip(*data[method][seed])
            label = method if j == 0 else None
            if len(t) == 1:
                ax.plot(t, [100 * v for v in a], "D", color=colour, label=label)
            else:
                ax.plot(t, [100 * v for v in a], "-", color=colour, alpha=0.8, lw=1.3, label=label)
    ax.axvline(budget, color="grey", ls="--", lw=1)
    ax.text(budget, 99.5, "budget ", color="grey", va="top", ha="right")
    end = max([budget] + [t for runs in data.values() for points in runs.values() for t, _ in points]) * 1.03
    ax.set_xlim(0, end)  # runs that overran the budget show how far
    ax.set_ylim(70, 100)  # the first epochs of the weaker methods start lower
    ax.set_xticks(range(0, int(end) + 1, 120))
    ax.set_xticklabels([f"{s // 60}" for s in range(0, int(end) + 1, 120)])
    ax.set_xlabel("training time (minutes, 2 CPU threads)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("MNIST, 100 labels: test accuracy after each epoch, split seeds 0-2")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", default="sqlite:///bench/results/mlflow.db")
    p.add_argument("--experiment", default="mnist-budget")
    p.add_argument("--figure", metavar="PNG", help="also draw the curves (accuracy against training time) here")
    args = p.parse_args()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"error: no experiment {args.experiment!r} in {args.tracking_uri}: run bench/mnist_budget.sh first")
    data = curves(client, experiment.experiment_id)
    print(table(data))
    if args.figure:
        figure(data, args.figure, MARKS[-1])
    print("\nCells: mean over the seeds of the test accuracy (%) of the last epoch finished by each mark (– where a "
          "seed had none), of the final accuracy, the time used, and, per seed in seed order, the "
          "training time at which each level was first reached (– never).")


if __name__ == "__main__":
    run_main(main)
