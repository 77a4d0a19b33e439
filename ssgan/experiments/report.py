"""The report of a comparison, built from what the MLflow store holds (its parent run and child runs).

`ssgan compare` writes it when its runs are done; `ssgan report` rebuilds it, with the same function,
from any store that holds the comparison: summary.json, report.md, a self-contained report.html, the
learning curve and the confusion matrix of the best ssgan run.

Per label budget: mean ± std of test accuracy and macro-F1 per method over the split seeds, and the
gain of ssgan over supervised as the mean of the paired per-seed differences with its 95 % Student-t
interval, a paired t-test and a Wilcoxon signed-rank test. Failed runs are listed, not averaged.
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any, Optional

from ssgan.experiments.origin import ConfigOrigin
from ssgan.experiments.plan import ALL, Plan
from ssgan.errors import SSGANError
from ssgan.evaluation.stats import mean_std, paired_ci, paired_tests
from ssgan.tracking.store import check_reachable, resolve_uri

METRICS = ("test_accuracy", "test_balanced_accuracy", "test_macro_f1")
CURVE, CONFUSION = "learning_curve.png", "confusion_best_ssgan.png"


def report_from_store(experiment: str, parent_run_id: Optional[str] = None, out_dir: str | Path = "report",
                      tracking_uri: Optional[str] = None) -> dict[str, Any]:
    """Rebuild a comparison's report from the store (default parent: the experiment's latest comparison)."""
    import mlflow

    uri = resolve_uri(tracking_uri)
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    try:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            raise SSGANError(f"experiment {experiment!r} does not exist in {uri}")
        if parent_run_id is None:
            runs = mlflow.search_runs([exp.experiment_id], filter_string="tags.kind = 'compare'", max_results=1,
                                      order_by=["attributes.start_time DESC"], output_format="list")
            if not runs:
                raise SSGANError(f"experiment {experiment!r} holds no comparison (no run tagged kind=compare)")
            parent_run_id = runs[0].info.run_id
        else:
            try:
                parent = mlflow.MlflowClient().get_run(parent_run_id)
            except mlflow.exceptions.MlflowException:
                raise SSGANError(f"run {parent_run_id!r} does not exist in {uri}") from None
            if parent.info.experiment_id != exp.experiment_id or parent.data.tags.get("kind") != "compare":
                raise SSGANError(f"run {parent_run_id!r} is not a comparison of experiment {experiment!r}")
    except mlflow.exceptions.MlflowException as e:
        raise SSGANError(f"MLflow store {uri}: {str(e).splitlines()[0]}") from None
    return write_report(exp.experiment_id, parent_run_id, out_dir)


def write_report(experiment_id: str, parent_run_id: str, out_dir: str | Path) -> dict[str, Any]:
    """Read the comparison from the store; write summary.json, report.md, report.html and the figures."""
    import mlflow

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_run_id)
    plan = Plan.from_tags(parent.data.tags)
    children = mlflow.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  output_format="list")
    summary = summarize(collect_rows(plan, children), plan)
    origin = ConfigOrigin.from_tags(parent.data.tags)
    summary = {"experiment": client.get_experiment(experiment_id).name, "parent_run_id": parent_run_id,
               "dataset": parent.data.tags.get("dataset"), "fingerprint": parent.data.tags.get("fingerprint"),
               "config": origin.as_dict() if origin else None, **summary}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = [CURVE] + ([CONFUSION] if summary["best_ssgan"] else [])
    summary["files"] = ["summary.json", "report.md", "report.html", *figures]
    learning_curve(summary, out / CURVE)
    if summary["best_ssgan"]:
        best = summary["best_ssgan"]
        cm = mlflow.artifacts.load_dict(f"runs:/{best['run_id']}/confusion_matrix.json")
        confusion_png(cm, f"best ssgan run: {best['budget']} labels, seed {best['split_seed']}, "
                          f"accuracy {100 * best['test_accuracy']:.1f} %", out / CONFUSION)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    blocks = report_blocks(summary)
    (out / "report.md").write_text(markdown(blocks))
    (out / "report.html").write_text(to_html(blocks, out))
    return summary


def collect_rows(plan: Plan, runs: list) -> list[dict[str, Any]]:
    """One row per (method, budget, seed) of the plan, from its latest child run (a resumed run replaces a
    failed one); `status` is finished, failed, unfinished or missing (the last three with a `failure_reason`)."""
    latest = {}
    for run in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id)):
        t = run.data.tags
        latest[t.get("method"), t.get("budget"), t.get("split_seed")] = run
    rows = []
    for method, budget, seed in plan.runs():
        row = {"method": method, "budget": budget, "split_seed": seed, "status": "missing", "failure_reason": "not run",
               "labels": None, "split_hash": None, **{m: None for m in METRICS}, "seconds": None, "run_id": None}
        run = latest.get((method, budget, str(seed)))
        if run is not None:
            t, info = run.data.tags, run.info
            if info.status == "FINISHED" and t.get("outcome") != "failed":
                status, reason = "finished", None
            elif info.status == "RUNNING" and "outcome" not in t:
                status, reason = "unfinished", "MLflow status RUNNING: still training, or its process died"
            else:
                status, reason = "failed", t.get("failure_reason", f"MLflow status {info.status}")
            row.update({
                "status": status, "failure_reason": reason,
                "labels": int(t["labels"]) if "labels" in t else None, "split_hash": t.get("split_hash"),
                **{m: run.data.metrics.get(m) for m in METRICS},
                "seconds": _seconds(run),
                "run_id": info.run_id,
            })
        rows.append(row)
    return rows


def _seconds(run) -> Optional[float]:
    """Wall-clock seconds of a run: what the comparison measured (`run_seconds`: from the start of its work, not
    from the run's creation, which on a Ray driver comes long before); of a resumed one (end minus start would
    count the pause) its training seconds over all its parts."""
    if "resumed_after_epoch" in run.data.tags and "train_seconds" in run.data.metrics:
        return run.data.metrics["train_seconds"]
    if "run_seconds" in run.data.metrics:
        return run.data.metrics["run_seconds"]
    return (run.info.end_time - run.info.start_time) / 1000 if run.info.end_time else None


def summarize(rows: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """Per budget: each method's mean ± std over seeds and ssgan's paired gain over supervised."""
    by_budget = []
    for budget in plan.budgets:
        mine = [r for r in rows if r["budget"] == budget]
        ok = [r for r in mine if r["status"] == "finished"]
        by_budget.append({
            "budget": budget,
            "labels": next((r["labels"] for r in mine if r["labels"] is not None), None),
            "methods": [method_stats(m, [r for r in ok if r["method"] == m]) for m in plan.methods],
            "gain": gain(ok, "ssgan", "supervised") if {"ssgan", "supervised"} <= set(plan.methods) else None,
            # ssgan against each further method, paired by seed as against supervised
            "gains": {m: gain(ok, "ssgan", m) for m in plan.methods if m not in ("ssgan", "supervised")}
            if "ssgan" in plan.methods else {},
        })
    ssgan_runs = [r for r in rows if r["method"] == "ssgan" and r["status"] == "finished"]
    best = max(ssgan_runs, key=lambda r: r["test_accuracy"], default=None)  # the first of equals
    return _finite({
        "plan": {"budgets": list(plan.budgets), "seeds": plan.seeds, "methods": list(plan.methods)},
        "complete": all(r["status"] == "finished" for r in rows),
        "by_budget": by_budget,
        "best_ssgan": None if best is None else {k: best[k] for k in ("run_id", "budget", "split_seed", "test_accuracy")},
        "failed": [{k: r[k] for k in ("method", "budget", "split_seed", "status", "failure_reason", "run_id")}
                   for r in rows if r["status"] != "finished"],
        "runs": rows,
    })


def method_stats(method: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {"method": method, "n": len(runs)}
    for key, name in (("test_accuracy", "accuracy"), ("test_macro_f1", "macro_f1"), ("seconds", "seconds")):
        values = [r[key] for r in runs if r[key] is not None]
        mean, std = mean_std(values) if values else (None, None)
        stats[f"{name}_mean"], stats[f"{name}_std"] = mean, std
    return stats


def gain(runs: list[dict[str, Any]], method: str, baseline: str) -> dict[str, Any]:
    """Accuracy of `method` minus `baseline`, paired by split seed (seeds where both finished)."""
    acc = {(r["method"], r["split_seed"]): r["test_accuracy"] for r in runs}
    seeds = sorted(s for m, s in acc if m == method and (baseline, s) in acc)
    diffs = [acc[method, s] - acc[baseline, s] for s in seeds]
    if not diffs:
        return {"n": 0, "seeds": [], "diffs": [], "mean": None, "ci95": [None, None], "t_test_p": None,
                "wilcoxon_p": None}
    mean, low, high = paired_ci(diffs)
    t_p, w_p = paired_tests(diffs)
    return {"n": len(diffs), "seeds": seeds, "diffs": diffs, "mean": mean, "ci95": [low, high], "t_test_p": t_p,
            "wilcoxon_p": w_p}


# --- rendering: the same blocks become Markdown and HTML ---

def report_blocks(summary: dict[str, Any]) -> list[tuple]:
    """("h1"|"h2"|"p", text), ("table", header, rows) and ("img", file, alt) blocks of the report."""
    plan = summary["plan"]
    blocks: list[tuple] = [("h1", f"Comparison on {summary['dataset']}: {', '.join(plan['methods'])}")]
    if summary.get("config"):  # comparisons recorded before the config's origin was have none
        blocks.append(("p", ConfigOrigin.from_dict(summary["config"]).sentence()))
    blocks += [
        ("p", f"MLflow experiment {summary['experiment']}, parent run {summary['parent_run_id']}. "
              f"Label budgets {', '.join(plan['budgets'])} x split seeds 0-{plan['seeds'] - 1}: for each budget and "
              "seed every method sees the same labeled examples (same split_hash) and the same test set. "
              "Test accuracy and macro-F1 in %, mean ± std over the seeds whose run finished."),
    ]
    for b in summary["by_budget"]:
        title = f"{b['budget']} labels" if b["budget"] != ALL or b["labels"] is None else f"all labels ({b['labels']})"
        blocks.append(("h2", title))
        rows = [[m["method"], f"{m['n']} / {plan['seeds']}", _pm(m["accuracy_mean"], m["accuracy_std"]),
                 _pm(m["macro_f1_mean"], m["macro_f1_std"]), _num(m["seconds_mean"], "{:.1f}")]
                for m in b["methods"]]
        blocks.append(("table", ["method", "runs", "accuracy", "macro-F1", "s / run"], rows))
        if b["gain"] is not None:
            blocks.append(("p", gain_sentence(b["gain"])))
        if b.get("gains"):  # comparisons recorded before these were have none
            blocks.append(("table", ["ssgan minus", "points", "95 % CI", "paired t-test p", "Wilcoxon p", "seeds"],
                           [gain_row(m, g) for m, g in b["gains"].items()]))
    blocks += [("h2", "Learning curve"), ("img", CURVE, "test accuracy vs number of labels, one line per method")]
    best = summary["best_ssgan"]
    if best:
        blocks += [("h2", "Confusion matrix of the best ssgan run"),
                   ("p", f"Run {best['run_id']}: {best['budget']} labels, seed {best['split_seed']}, "
                         f"test accuracy {100 * best['test_accuracy']:.1f} %."),
                   ("img", CONFUSION, "confusion matrix of the best ssgan run")]
    if summary["failed"]:
        blocks += [("h2", "Failed or missing runs"),
                   ("table", ["method", "labels", "seed", "status", "reason", "run"],
                    [[f["method"], f["budget"], str(f["split_seed"]), f["status"], f["failure_reason"] or "",
                      f["run_id"] or ""] for f in summary["failed"]])]
    return blocks


def gain_sentence(g: dict[str, Any]) -> str:
    if g["n"] == 0:
        return "ssgan - supervised: n/a (no seed where both finished)."
    low, high = g["ci95"]
    ci = "n/a" if low is None else f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    return (f"ssgan - supervised: {100 * g['mean']:+.1f} points (95 % CI {ci}; paired t-test "
            f"p = {_num(g['t_test_p'], '{:.3g}')}, Wilcoxon signed-rank p = {_num(g['wilcoxon_p'], '{:.3g}')}; "
            f"{g['n']} paired seed{'s' if g['n'] != 1 else ''}).")


def gain_row(method: str, g: dict[str, Any]) -> list[str]:
    """A row of the table of ssgan's paired gains over the further methods."""
    if g["n"] == 0:
        return [method, "n/a", "n/a", "n/a", "n/a", "0"]
    low, high = g["ci95"]
    ci = "n/a" if low is None else f"[{100 * low:+.1f}, {100 * high:+.1f}]"
    return [method, f"{100 * g['mean']:+.1f}", ci, _num(g["t_test_p"], "{:.3g}"), _num(g["wilcoxon_p"], "{:.3g}"),
            str(g["n"])]


def markdown(blocks: list[tuple]) -> str:
    parts = []
    for kind, *body in blocks:
        if kind in ("h1", "h2"):
            parts.append(("# " if kind == "h1" else "## ") + body[0])
        elif kind == "p":
            parts.append(body[0])
        elif kind == "table":
            header, rows = body
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            parts.append("\n".join(lines + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]))
        else:
            parts.append(f"![{body[1]}]({body[0]})")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: list[tuple], image_dir: Path) -> str:
    """A self-contained page: the figures are embedded as base64 PNGs."""
    parts = []
    for kind, *body in blocks:
        if kind in ("h1", "h2", "p"):
            parts.append(f"<{kind}>{html.escape(body[0])}</{kind}>")
        elif kind == "table":
            header, rows = body
            head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        else:
            data = base64.b64encode((image_dir / body[0]).read_bytes()).decode()
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(body[1])}">')
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}"
             "img{max-width:100%}")
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(blocks[0][1])}</title>'
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")


def learning_curve(summary: dict[str, Any], path: Path) -> None:
    """Test accuracy vs number of labels (log scale), one line per method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullLocator

    methods = summary["plan"]["methods"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, method in enumerate(methods):
        points = [(b["labels"], m["accuracy_mean"], m["accuracy_std"]) for b in summary["by_budget"]
                  for m in b["methods"] if m["method"] == method and m["n"] and b["labels"]]
        if points:
            x, y, err = zip(*sorted(points))
            shift = 1 + 0.03 * (i - (len(methods) - 1) / 2)  # side by side, so error bars do not hide each other
            ax.errorbar([v * shift for v in x], [100 * v for v in y], yerr=[100 * e for e in err], marker="o",
                        capsize=3, label=method)
    ticks = [(b["labels"], f"{b['labels']}" + (" (all)" if b["budget"] == ALL else "")) for b in summary["by_budget"]
             if b["labels"]]
    ax.set_xscale("log")
    ax.set_xticks([t for t, _ in ticks], [name for _, name in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("labeled training examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{summary['dataset']}: mean ± std over split seeds")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no finished run yet: no legend (and no matplotlib warning)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_png(cm: dict[str, Any], title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    from ssgan.evaluation.figures import confusion_figure

    fig = confusion_figure(cm["matrix"], cm["labels"], title)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pm(mean: Optional[float], std: Optional[float]) -> str:
    return "n/a" if mean is None else f"{100 * mean:.1f} ± {100 * std:.1f}"


def _num(v: Optional[float], fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def _finite(node: Any) -> Any:
    """NaN (an interval or a test with fewer than two pairs) -> None, so summary.json is plain JSON."""
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_finite(v) for v in node]
    return None if isinstance(node, float) and math.isnan(node) else node
