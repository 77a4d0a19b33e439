"""Ablation of the stabilizing tricks: the base config and one variant per trick with that trick
toggled, over several split seeds, as nested MLflow runs under one parent run."""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ssgan.config import Config, flatten, replace
from ssgan.errors import ConfigError
from ssgan.experiments.cluster import RayOptions, check_store, connect, train_on_ray
from ssgan.experiments.origin import ConfigOrigin
from ssgan.nets.models import check_tricks_apply
from ssgan.evaluation.stats import mean_std, paired_ci

log = logging.getLogger("ssgan")

# trick name -> (config key, value when the trick is on, value when off)
TOGGLES: dict[str, tuple[str, Any, Any]] = {
    "label_smoothing": ("tricks.label_smoothing", True, False),
    "label_flip": ("tricks.label_flip", True, False),
    "gaussian_noise": ("tricks.gaussian_noise", True, False),
    "noise_anneal": ("tricks.noise_anneal", True, False),
    "dropout": ("tricks.dropout", 0.3, 0.0),
    "warmup": ("tricks.warmup_steps", 100, 0),
    "sgd": ("tricks.optimizer", "sgd", "adam"),
    "lr_decay": ("train.lr_schedule", "linear_decay", "constant"),
    "ema": ("train.ema_decay", 0.999, 0.0),
    "feature_matching": ("train.gen_loss", "feature_matching", "non_saturating"),
    "leaky_relu": ("model.activation", "leaky_relu", "relu"),
    "explicit_fake_logit": ("model.fake_logit", "explicit", "fixed_zero"),
    "data_init": ("model.data_init", True, False),
    "tanh_range": ("data.scale", "tanh", "sigmoid"),
    "d_spectral_norm": ("tricks.d_norm", "spectral", "recipe"),
    "d_no_norm": ("tricks.d_norm", "none", "recipe"),
    "g_layer_norm": ("tricks.g_norm", "layer", "recipe"),
    "pooling": ("tricks.downsample", "pool", "strided"),
    "conditional": ("tricks.conditional", True, False),
}


@dataclass(frozen=True)
class Variant:
    name: str  # "base" or "<trick> on|off"
    cfg: Config


def variants(base: Config, tricks: Sequence[str]) -> list[Variant]:
    """The base config plus one config per trick with that trick flipped from its base setting."""
    unknown = [t for t in tricks if t not in TOGGLES]
    if unknown:
        raise ConfigError(f"unknown trick {unknown[0]!r}; choose from {', '.join(TOGGLES)}")
    out = [Variant("base", base)]
    flat = flatten(base)
    for trick in tricks:
        key, on, off = TOGGLES[trick]
        now_on = flat[key] != off  # e.g. any ema_decay > 0 counts as "on"
        cfg = replace(base, **{key: off if now_on else on})
        check_tricks_apply(cfg.model, cfg.tricks)  # e.g. pooling on an MLP: fail before any training
        out.append(Variant(f"{trick} {'off' if now_on else 'on'}", cfg))
    return out


def run_ablation(base: Config, tricks: Sequence[str], seeds: int, out_dir: Optional[str | Path] = None,
                 progress: Optional[bool] = None, origin: Optional[ConfigOrigin] = None,
                 ray: Optional[RayOptions] = None) -> dict[str, Any]:
    """Train every variant for split seeds 0..seeds-1; write ablation.{json,md,png} and log them. `origin`:
    the config file and --set overrides `base` came from, tagged on the parent run and stated in ablation.md.
    `ray`: every run is a Ray task (ssgan/experiments/cluster.py) into a child run the driver creates."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from ssgan.tracking.run import new_run, run_training
    from ssgan.tracking.store import resolve_uri, use_store

    if ray is not None:
        check_store(resolve_uri(base.tracking.uri), ray)
        connect(ray)  # an unreachable cluster fails here, before the parent run is opened

    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    todo = variants(base, tricks)
    origin = origin or ConfigOrigin.of(base, "a Config passed to run_ablation")
    out = Path(out_dir or "ablation")
    out.mkdir(parents=True, exist_ok=True)
    experiment_id = use_store(base)
    runs: list[dict[str, Any]] = []
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"ablate {','.join(tricks)}") as parent:
        mlflow.set_tags({"kind": "ablation", "tricks": ",".join(tricks), "seeds": str(seeds), **origin.tags()})
        grid = [(v, seed, replace(v.cfg, **{"data.split_seed": seed, "train.seed": seed,
                                            "tracking.run_name": f"{v.name} · seed {seed}"}))
                for v in todo for seed in range(seeds)]
        remote: dict[tuple[str, int], dict[str, Any]] = {}
        if ray is not None:  # all at once on Ray; the table below is then written from their summaries
            jobs = [(f"{v.name} · seed {seed}", cfg, new_run(experiment_id, cfg.tracking.run_name, nested=False, tags={
                MLFLOW_PARENT_RUN_ID: parent.info.run_id, "variant": v.name}), {"variant": v.name})
                for v, seed, cfg in grid]
            remote = {(v.name, seed): s for (v, seed, _), s in zip(grid, train_on_ray(jobs, ray, mlflow.get_tracking_uri()))}
        for variant in todo:
            for seed in range(seeds):
                cfg = next(c for v, s_, c in grid if v is variant and s_ == seed)
                start = time.perf_counter()
                s = remote.get((variant.name, seed)) or run_training(cfg, progress=progress, nested=True,
                                                                     tags={"variant": variant.name})
                runs.append({"variant": variant.name, "seed": seed, "test_accuracy": s["test_accuracy"],
                             "stop_reason": s["stop_reason"], "watchdog_warnings": s["watchdog_warnings"],
                             "seconds": s["wall_clock_seconds"] if remote else time.perf_counter() - start,
                             "run_id": s["run_id"]})
                log.warning("%-24s seed %d  accuracy %.4f  (%s)", variant.name, seed, s["test_accuracy"], s["stop_reason"])
            done = [v.name for v in todo[: todo.index(variant) + 1]]
            summary = {"parent_run_id": parent.info.run_id, "tricks": list(tricks), "seeds": seeds,
                       "config": origin.as_dict(),
                       "rows": summarize(runs, done), "runs": runs, "complete": len(done) == len(todo)}
            # written after every variant, so an interrupted ablation keeps what it measured
            (out / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
            (out / "ablation.md").write_text(f"{origin.sentence()}\n\n{markdown(summary['rows'], seeds)}")
        bar_chart(summary["rows"], out / "ablation.png")
        for name in ("ablation.json", "ablation.md", "ablation.png"):
            mlflow.log_artifact(str(out / name))
    return summary


def summarize(runs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    base = {r["seed"]: r["test_accuracy"] for r in runs if r["variant"] == "base"}
    rows = []
    for name in names:
        mine = [r for r in runs if r["variant"] == name]
        acc = [r["test_accuracy"] for r in mine]
        mean, std = mean_std(acc)
        diff, low, high = paired_ci([r["test_accuracy"] - base[r["seed"]] for r in mine])
        rows.append({"variant": name, "accuracy_mean": mean, "accuracy_std": std, "diff_to_base": diff,
                     "diff_ci95": [low, high], "watchdog_fired": any(r["stop_reason"] not in ("completed", "interrupted")
                                                                     or r["watchdog_warnings"] for r in mine),
                     "seconds_mean": mean_std([r["seconds"] for r in mine])[0], "n": len(mine)})
    return rows


def markdown(rows: list[dict[str, Any]], seeds: int) -> str:
    lines = [f"| variant | test accuracy (mean ± std, {seeds} seeds) | vs base (95 % CI) | watchdog | s / run |",
             "|---|---|---|---|---|"]
    for r in rows:
        low, high = r["diff_ci95"]
        ci = "" if r["variant"] == "base" else (
            f"{100 * r['diff_to_base']:+.1f}" + ("" if math.isnan(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]"))
        lines.append(f"| {r['variant']} | {100 * r['accuracy_mean']:.1f} ± {100 * r['accuracy_std']:.1f} % | {ci} | "
                     f"{'fired' if r['watchdog_fired'] else '-'} | {r['seconds_mean']:.0f} |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 4))
    colors = ["#555555"] + ["#2a7ab9" if r["diff_to_base"] >= 0 else "#c0392b" for r in rows[1:]]
    ax.bar(names, [100 * r["accuracy_mean"] for r in rows], yerr=[100 * r["accuracy_std"] for r in rows],
           color=colors, capsize=4)
    ax.axhline(100 * rows[0]["accuracy_mean"], color="#555555", linestyle="--", linewidth=1)
    lo = min(100 * (r["accuracy_mean"] - r["accuracy_std"]) for r in rows)
    ax.set_ylim(max(0.0, lo - 5), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("ablation: each trick toggled against the base config")
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
