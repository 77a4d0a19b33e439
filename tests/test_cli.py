"""End to end through the CLI: a real SQLite MLflow store, and one-line errors for bad input."""
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from ssgan.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)


def test_smoke_run_end_to_end(tmp_path, npz_path, store_uri):
    out = tmp_path / "out"
    result = run_cli(
        "train", "-c", str(ROOT / "configs/smoke.yaml"), "--out", str(out),
        "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "data.labels=6",
        "--set", f"tracking.uri={store_uri}",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "ssgan" and summary["labels"] == 6
    assert summary["epochs"] == summary["epochs_completed"] == 2 and summary["stop_reason"] == "completed"
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["wall_clock_seconds"] > 0
    assert {"train_seed", "split_seed", "test_macro_f1", "test_balanced_accuracy"} <= set(summary)

    mlflow.set_tracking_uri(store_uri)
    client = mlflow.MlflowClient()
    run = client.get_run(summary["run_id"])
    assert run.data.params["train.epochs"] == "2" and run.data.params["mode"] == "ssgan"
    assert run.data.tags["split_hash"] == summary["split_hash"]
    assert run.data.tags["stop_reason"] == "completed"
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "classification_report.json", "config.yaml", "checkpoint.pt"} <= artifacts
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("samples" in p and p.endswith(".png") for p in images)

    # The logged model maps inputs to the K class probabilities and agrees with the run's accuracy.
    model = mlflow.pytorch.load_model(summary["model_uri"])
    data = np.load(npz_path)
    import torch

    x_test = torch.from_numpy(data["X_test"] / 255.0 * 2 - 1).float()  # the tiny set spans [0, 240]
    probs = model(x_test[:5])
    assert tuple(probs.shape) == (5, 3)
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)


def test_supervised_mode_from_the_cli(tmp_path, npz_path, store_uri):
    out = tmp_path / "sup"
    result = run_cli(
        "train", "-c", str(ROOT / "configs/smoke.yaml"), "--mode", "supervised", "--out", str(out),
        "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "data.labels=6",
        "--set", f"tracking.uri={store_uri}", "--set", "tracking.log_model=false",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "supervised" and summary["model_uri"] is None


@pytest.mark.parametrize(
    "args,message",
    [
        (["--set", "train.epochs"], "--set expects key=value"),
        (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
        (["--set", "train.epochs=many"], "train.epochs must be an integer"),
        (["--set", "data.name=imagenet"], "data.name must be one of"),
        (["--set", "data.labels=5000"], "only 1347 labeled"),
        (["--set", "data.labels=5"], "fewer than one per class"),
        (["--set", "data.name=mnist", "--set", "data.root=/nonexistent"], "data.root '/nonexistent' does not exist"),
        (["--set", "data.name=npz", "--set", "data.path=/nonexistent.npz"], "does not exist"),
        (["--set", "tracking.uri=http://127.0.0.1:9"], "cannot be reached"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message):
    result = CliRunner().invoke(cli, ["train", "-c", str(ROOT / "configs/smoke.yaml"), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_bad_csv_from_the_command_line_has_no_traceback(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,label\n1,x\n2,0\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", "-c", str(ROOT / "configs/smoke.yaml"),
         "--set", "data.name=csv", "--set", f"data.path={path}"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: '{path}' line 2: label 'x' is not an integer "
                                                "(use an integer class, or empty / -1 for unlabeled)"]


def test_missing_config_file_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["train", "-c", "/nonexistent.yaml"])
    assert result.exit_code == 2 and result.output.strip() == "error: config file '/nonexistent.yaml' not found"
