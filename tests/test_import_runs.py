"""bench/import_runs.py: runs made without MLflow (a lent GPU machine, a long CPU benchmark) logged into an
MLflow store afterwards, one run per per-epoch file, named so that variants of one config tell apart."""
import json
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]


def write_run(folder: Path, stem: str, epochs: list[dict], summary: dict | None) -> None:
    (folder / f"{stem}.jsonl").write_text("".join(json.dumps(e) + "\n" for e in epochs))
    if summary is not None:
        (folder / f"{stem}.json").write_text(json.dumps(summary))


def test_runs_are_logged_with_every_epoch_and_named_by_the_settings_they_changed(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    epochs = [{"epoch": 1, "test_accuracy": 0.90, "loss_d": 0.7}, {"epoch": 2, "test_accuracy": 0.95, "loss_d": 0.6}]
    write_run(runs, "mnist-100-seed0", epochs,
              {"config": {"train": {"lr": 0.0005, "epochs": 2}}, "overrides": ["train.device=cpu", "train.lr=0.0005"],
               "device": "x86_64 CPU", "stop_reason": "completed", "test_accuracy": 0.95, "test_error_pct": 5.0})
    write_run(runs, "mnist-100-seed1", epochs[:1], None)  # stopped by a deadline: no summary
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = subprocess.run([sys.executable, str(ROOT / "bench/import_runs.py"), str(runs), "--experiment", "imported",
                          "--tracking-uri", uri], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr

    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([client.get_experiment_by_name("imported").experiment_id])
    by_name = {r.info.run_name: r for r in found}
    assert set(by_name) == {"mnist-100-seed0 train.lr=0.0005", "mnist-100-seed1"}

    done = by_name["mnist-100-seed0 train.lr=0.0005"]
    assert done.data.tags["finished"] == "true"
    assert done.data.tags["overrides"] == "train.device=cpu train.lr=0.0005"
    assert done.data.params["train.lr"] == "0.0005"
    assert done.data.metrics["test_error_pct"] == 5.0
    history = client.get_metric_history(done.info.run_id, "loss_d")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 0.7), (2, 0.6)]

    unfinished = by_name["mnist-100-seed1"]
    assert unfinished.data.tags["finished"] == "false"
    assert unfinished.data.params == {}


def test_importing_a_folder_again_logs_only_the_runs_that_are_new_or_changed(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    epochs = [{"epoch": 1, "test_accuracy": 0.90}, {"epoch": 2, "test_accuracy": 0.95}]
    write_run(runs, "seed0", epochs, {"config": {}, "test_error_pct": 5.0})
    write_run(runs, "seed1", epochs[:1], None)  # still running when first imported
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, str(ROOT / "bench/import_runs.py"), str(runs), "--experiment", "again", "--tracking-uri", uri]
    client = MlflowClient(tracking_uri=uri)

    def names() -> list[str]:
        return sorted(r.info.run_name for r in client.search_runs([client.get_experiment_by_name("again").experiment_id]))

    assert subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).returncode == 0
    assert names() == ["seed0", "seed1"]

    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "seed0.jsonl: already in experiment again as run 'seed0', skipped" in again.stdout
    assert names() == ["seed0", "seed1"]

    # it has finished since; its files now hold the same bytes as seed0's, but they are another run's files
    partial_id = next(r.info.run_id for r in client.search_runs([client.get_experiment_by_name("again").experiment_id])
                      if r.info.run_name == "seed1")
    write_run(runs, "seed1", epochs, {"config": {}, "test_error_pct": 5.0})
    third = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert third.returncode == 0, third.stderr
    assert third.stdout.splitlines() == ["seed0.jsonl: already in experiment again as run 'seed0', skipped",
                                         "seed1.jsonl: 2 epochs",
                                         f"seed1.jsonl: older import 'seed1' ({partial_id}) replaced and deleted"]
    # the experiment holds each file once, as its finished run; the partial import is deleted, not lost
    assert names() == ["seed0", "seed1"]
    finished = [r for r in client.search_runs([client.get_experiment_by_name("again").experiment_id])
                if r.data.tags["finished"] == "true"]
    assert sorted(r.info.run_name for r in finished) == ["seed0", "seed1"]
    assert client.get_run(partial_id).info.lifecycle_stage == "deleted"
    assert client.get_run(partial_id).data.tags["finished"] == "false"

def test_a_missing_or_empty_folder_is_a_one_line_error_and_creates_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for folder, why in [(tmp_path / "nope", "is not a folder; give the --out folder of bench/gpu_recipe.py"),
                        (tmp_path, "holds no runs (*.jsonl) or ensembles (*-ensemble.json); nothing to import")]:
        out = subprocess.run([sys.executable, str(ROOT / "bench/import_runs.py"), str(folder), "--tracking-uri", uri],
                             capture_output=True, text=True, cwd=ROOT)
        assert out.returncode != 0
        assert out.stderr.strip().splitlines() == [f"error: {folder} {why}"]
    assert not (tmp_path / "mlflow.db").exists()
