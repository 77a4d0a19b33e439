"""Log runs made where MLflow is not installed (bench/gpu_recipe.py on a lent GPU machine) into an MLflow
store afterwards: one run per per-epoch JSON-lines file, with its config as params, every epoch's metrics
at step = epoch, the summary's numbers as final metrics, and tags saying where and how it ran.

    python bench/import_runs.py bench/results/gpu --experiment gpu-mnist-100 \
        --tracking-uri sqlite:///bench/results/mlflow.db

A file without its summary .json (a run stopped by a deadline) is logged too, tagged `finished=false`.
A run's name is its file's name followed by the settings it overrode (`--set`), also kept as tag `overrides`.
Each -ensemble.json (several runs of one split seed, their class probabilities averaged) becomes a run with
the ensemble's and the members' test errors.
Each run is tagged with a SHA-256 of its files' names and bytes (`content_sha256`); a file whose run is already in the
experiment with the same content is skipped, so importing a folder again logs only what is new or changed.
A file whose content changed (an unfinished run that has since finished) is logged again, and its older import
(same `source_file` tag) is deleted, so the experiment holds each file once; MLflow keeps deleted runs
restorable (`mlflow runs restore --run-id ...`) until `mlflow gc`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssgan.tracking.logger import param_value  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--experiment", default="gpu-mnist-100")
    ap.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'bench/results/mlflow.db'}")
    args = ap.parse_args()
    if not args.folder.is_dir():
        sys.exit(f"error: {args.folder} is not a folder; give the --out folder of bench/gpu_recipe.py")
    if not any(args.folder.glob("*.jsonl")) and not any(args.folder.glob("*-ensemble.json")):
        sys.exit(f"error: {args.folder} holds no runs (*.jsonl) or ensembles (*-ensemble.json); nothing to import")
    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = mlflow.set_experiment(args.experiment)
    imported = [r for r in mlflow.search_runs([experiment.experiment_id], output_format="list")
                if "content_sha256" in r.data.tags]
    logged = {r.data.tags["content_sha256"]: r.info.run_name for r in imported}
    for log in sorted(args.folder.glob("*.jsonl")):
        summary_path = log.with_suffix(".json")
        digest = content_sha256(log, summary_path)
        if skipped(log, digest, logged, args.experiment):
            continue
        epochs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        with mlflow.start_run(run_name=run_name(log.stem, summary)) as run:
            if summary:
                flat = _flatten(summary.pop("config"))
                mlflow.log_params({k: param_value(v) for k, v in flat.items()})
            mlflow.set_tags({"source_file": source_file(log),
                             "finished": str(bool(summary)).lower(), "imported": "true", "content_sha256": digest,
                             "overrides": " ".join(summary.get("overrides", [])),
                             **{k: str(summary[k]) for k in ("device", "torch", "cuda_graph", "stop_reason") if k in summary}})
            for row in epochs:
                step = row.pop("epoch")
                mlflow.log_metrics({k: float(v) for k, v in row.items() if isinstance(v, (int, float))}, step=step)
            final = {k: summary[k] for k in ("test_accuracy", "test_error_pct", "train_seconds", "steps_per_s")
                     if isinstance(summary.get(k), (int, float))}
            if final:
                mlflow.log_metrics(final, step=len(epochs))
        print(f"{log.name}: {len(epochs)} epochs{'' if summary else ' (no summary: unfinished)'}")
        replace_older(log, run.info.run_id, imported)
    for path in sorted(args.folder.glob("*-ensemble.json")):
        digest = content_sha256(path)
        if skipped(path, digest, logged, args.experiment):
            continue
        report = json.loads(path.read_text())
        with mlflow.start_run(run_name=path.stem) as run:
            mlflow.set_tags({"source_file": source_file(path),
                             "imported": "true", "content_sha256": digest, "members": ", ".join(report["members"])})
            mlflow.log_metrics({"ensemble_error_pct": report["ensemble_error_pct"],
                                "mean_member_error_pct": report["mean_member_error_pct"],
                                "members_agree_fraction": report["members_agree_fraction"],
                                **{f"member{i}_error_pct": e for i, e in enumerate(report["member_error_pct"])}})
        print(f"{path.name}: ensemble of {len(report['members'])}, test error {report['ensemble_error_pct']} %")
        replace_older(path, run.info.run_id, imported)


def run_name(stem: str, summary: dict) -> str:
    """The file's name, then the settings the run changed (its --set overrides, less where it ran), so that
    runs of several variants of one config tell apart in the MLflow UI: `digits-20-best-seed0-init0 train.lr=0.0005`."""
    changed = [o for o in summary.get("overrides", []) if not o.startswith("train.device=")]
    return " ".join([stem, *changed])


def source_file(path: Path) -> str:
    """The `source_file` tag: the path relative to the repository when the file is in it, else absolute."""
    path = path.resolve()
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def replace_older(path: Path, new_run_id: str, imported: list) -> None:
    """Delete the earlier imports of `path` (same source_file, other content) now that `new_run_id` holds its
    current content; each deleted run is named with its id, so that it can be restored."""
    import mlflow

    tag = source_file(path)
    for old in imported:
        if old.data.tags.get("source_file") == tag and old.info.run_id != new_run_id:
            mlflow.delete_run(old.info.run_id)
            print(f"{path.name}: older import '{old.info.run_name}' ({old.info.run_id}) replaced and deleted")


def skipped(path: Path, digest: str, logged: dict[str, str], experiment: str) -> bool:
    """Whether the run in `path` is already in the experiment (same content_sha256); says so when it is."""
    if digest in logged:
        print(f"{path.name}: already in experiment {experiment} as run '{logged[digest]}', skipped")
    return digest in logged


def content_sha256(*paths: Path) -> str:
    """One run's identity: the SHA-256 of its files' names and bytes (a file that does not exist counts as
    empty), so that two runs whose logs happen to be equal but whose files are named apart stay two runs."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"")
        h.update(b"\0")
    return h.hexdigest()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


if __name__ == "__main__":
    main()
