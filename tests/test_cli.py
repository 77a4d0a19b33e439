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
    assert run.info.run_name == "ssgan · 6 labels · seed 0"  # what the run is, in the UI's runs table
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.user"]  # as mlflow.start_run leaves it
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
    assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "classification_report.json", "config.yaml", "checkpoint.pt"} <= artifacts
    assert ("confused_examples.png" in artifacts) == (summary["test_accuracy"] < 1.0)  # images of the errors
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert any("samples" in p and p.endswith(".png") for p in images)

    # The logged model takes raw inputs (pixels 0..240 here) and reproduces the run's test accuracy.
    model = mlflow.pyfunc.load_model(summary["model_uri"])
    data = np.load(npz_path)
    frame = model.predict(data["X_test"].astype(np.float32))
    assert list(frame.columns) == ["predicted", "p_0", "p_1", "p_2"]
    assert np.allclose(frame[["p_0", "p_1", "p_2"]].sum(axis=1), 1.0, atol=1e-5)
    assert (frame["predicted"].astype(int) == data["y_test"]).mean() == pytest.approx(summary["test_accuracy"])


def test_python_dash_m_ssgan_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "ssgan", "train", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and "Usage: ssgan train" in done.stdout


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


def test_several_seeds_at_once_give_one_run_per_seed(tmp_path, npz_path, store_uri):
    out = tmp_path / "seeds"
    result = run_cli(
        "train", "-c", str(ROOT / "configs/smoke.yaml"), "--seeds", "0,1", "--out", str(out),
        "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "data.labels=6",
        "--set", f"tracking.uri={store_uri}",
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output.strip().splitlines()[-1])
    assert [p["split_seed"] for p in printed] == [0, 1]
    summaries = [json.loads((out / f"summary-seed{s}.json").read_text()) for s in (0, 1)]
    assert [s["train_seed"] for s in summaries] == [0, 1] and summaries[0]["split_hash"] != summaries[1]["split_hash"]
    mlflow.set_tracking_uri(store_uri)
    client = mlflow.MlflowClient()
    for summary in summaries:  # each seed's run looks like a run of `ssgan train` for that seed
        assert summary["stop_reason"] == "completed" and summary["trained_with_seeds"] == [0, 1]
        run = client.get_run(summary["run_id"])
        assert run.data.tags["split_hash"] == summary["split_hash"] and run.data.tags["trained_with_seeds"] == "0,1"
        assert run.data.params["data.split_seed"] == str(summary["split_seed"])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_d")] == [1, 2]
        assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
        assert {"checkpoint.pt", "confusion_matrix.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
        model = mlflow.pyfunc.load_model(summary["model_uri"])  # the seed's own classifier
        data = np.load(npz_path)
        frame = model.predict(data["X_test"].astype(np.float32))
        assert (frame["predicted"].astype(int) == data["y_test"]).mean() == pytest.approx(summary["test_accuracy"])


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
        (["--set", "tricks.warmup_steps=1000"], "tricks.warmup_steps=1000 is longer than training (10 steps)"),
        (["--set", "tricks.d_norm=instance"], "tricks.d_norm=instance does not apply to model.arch=mlp"),
        (["--set", "tricks.flip_fraction=1.5"], "tricks.flip_fraction must be in [0, 1]"),
        (["--set", "tricks.smoothing_range=[0.3, 1.0]"], "tricks.smoothing_range must be [low, high]"),
        (["--seeds", "0,x"], "--seeds '0,x' must be distinct non-negative integers"),
        (["--seeds", "1,1"], "must be distinct"),
        (["--seeds", "0,1", "--register", "m"], "--register registers one model"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message):
    result = CliRunner().invoke(cli, ["train", "-c", str(ROOT / "configs/smoke.yaml"), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_bad_csv_from_the_command_line_has_no_traceback(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,label\nheavy,1\n2,0\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "train", "-c", str(ROOT / "configs/smoke.yaml"),
         "--set", "data.name=csv", "--set", f"data.path={path}"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: '{path}' column 'a', data row 1: 'heavy' is not a number; "
                                                "features must be numeric"]


def test_missing_config_file_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["train", "-c", "/nonexistent.yaml"])
    assert result.exit_code == 2 and result.output.strip() == "error: config file '/nonexistent.yaml' not found"


def test_watchdog_stop_is_recorded_and_exits_3(tmp_path, npz_path, store_uri):
    out = tmp_path / "wd"
    result = CliRunner().invoke(cli, [
        "-q", "train", "-c", str(ROOT / "configs/smoke.yaml"), "--out", str(out),
        "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "data.labels=6",
        "--set", f"tracking.uri={store_uri}", "--set", "tracking.log_model=false",
        "--set", "tricks.watchdog.d_loss_below=1e9", "--set", "tricks.watchdog.patience=7",
    ])
    assert result.exit_code == 3, result.output
    assert "stopped early (d_loss_collapse)" in result.output and "tricks.label_smoothing=true" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "d_loss_collapse" and summary["epochs_completed"] == 1
    mlflow.set_tracking_uri(store_uri)
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.data.tags["stop_reason"] == "d_loss_collapse"
    assert "test_accuracy" in run.data.metrics


def test_ablate_writes_table_json_chart_and_nested_runs(tmp_path, npz_path, store_uri):
    out = tmp_path / "abl"
    result = run_cli(
        "ablate", "-c", str(ROOT / "configs/smoke.yaml"), "--tricks", "label_smoothing,gaussian_noise",
        "--seeds", "2", "--out", str(out), "--set", "data.name=npz", "--set", f"data.path={npz_path}",
        "--set", "data.labels=6", "--set", f"tracking.uri={store_uri}", "--set", "tracking.experiment=ablate",
        "--set", "tracking.log_model=false",
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "ablation.json").read_text())
    assert [r["variant"] for r in summary["rows"]] == ["base", "label_smoothing on", "gaussian_noise off"]
    assert all(r["n"] == 2 for r in summary["rows"]) and len(summary["runs"]) == 6
    base = {r["seed"]: r["test_accuracy"] for r in summary["runs"] if r["variant"] == "base"}
    smooth = [r["test_accuracy"] - base[r["seed"]] for r in summary["runs"] if r["variant"] == "label_smoothing on"]
    assert summary["rows"][1]["diff_to_base"] == pytest.approx(sum(smooth) / 2)
    assert "| label_smoothing on |" in (out / "ablation.md").read_text()
    assert (out / "ablation.md").read_text().startswith(  # the overrides and epochs, as in a comparison's report
        f"Config: {ROOT / 'configs/smoke.yaml'} with overrides data.name=npz; data.path={npz_path}; data.labels=6; ")
    assert "(2 epochs per network run).\n\n| variant |" in (out / "ablation.md").read_text()
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"

    mlflow.set_tracking_uri(store_uri)
    client = mlflow.MlflowClient()
    parent = summary["parent_run_id"]
    children = mlflow.search_runs(experiment_names=["ablate"], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 6 and set(children["tags.variant"]) == {"base", "label_smoothing on", "gaussian_noise off"}
    assert {"ablation.md", "ablation.json", "ablation.png"} <= {a.path for a in client.list_artifacts(parent)}


def test_ablate_unknown_trick_is_a_one_line_error():
    result = CliRunner().invoke(cli, ["ablate", "-c", str(ROOT / "configs/smoke.yaml"), "--tricks", "magic"])
    assert result.exit_code == 2
    assert result.output.startswith("error: unknown trick 'magic'; choose from label_smoothing")


def test_sample_writes_a_class_grid_from_a_conditional_run(tmp_path, npz_path, store_uri):
    out = tmp_path / "cond"
    result = run_cli(
        "train", "-c", str(ROOT / "configs/smoke.yaml"), "--out", str(out), "--set", "data.name=npz",
        "--set", f"data.path={npz_path}", "--set", "data.labels=6", "--set", f"tracking.uri={store_uri}",
        "--set", "tricks.conditional=true",
    )
    assert result.exit_code == 0, result.output
    run_id = json.loads((out / "summary.json").read_text())["run_id"]
    grid = tmp_path / "grid.png"
    result = run_cli("sample", "--model", run_id, "--class", "2", "-n", "16", "--out", str(grid),
                     "--tracking-uri", store_uri)
    assert result.exit_code == 0, result.output
    from PIL import Image

    image = Image.open(grid)
    assert image.size[0] > 4 * 32 and image.mode == "RGB"  # 4 x 4 samples of at least 32 px

    bad = CliRunner().invoke(cli, ["sample", "--model", run_id, "--class", "7", "--out", str(grid),
                                   "--tracking-uri", store_uri])
    assert bad.exit_code == 2 and "--class '7' is not a class of this model; classes: 0, 1, 2" in bad.output
    missing = CliRunner().invoke(cli, ["sample", "--model", "no-such-run", "--out", str(grid), "--tracking-uri", store_uri])
    assert missing.exit_code == 2 and "is neither a file, a model folder, a run id nor a models:/" in missing.output
    # the references `predict` takes: summary.json's model URI (models:/m-...) and a checkpoint file
    model_uri = json.loads((out / "summary.json").read_text())["model_uri"]
    assert model_uri.startswith("models:/m-")
    by_uri = tmp_path / "by_uri.png"
    result = run_cli("sample", "--model", model_uri, "--class", "2", "-n", "16", "--out", str(by_uri),
                     "--tracking-uri", store_uri)
    assert result.exit_code == 0, result.output
    assert Image.open(by_uri).tobytes() == image.tobytes()  # the same generator, the same noise


SMOKE = str(ROOT / "configs/smoke.yaml")


@pytest.mark.parametrize("command", [
    ["train", "-c", SMOKE],
    ["compare", "-c", SMOKE, "--labels", "20"],
    ["ablate", "-c", SMOKE, "--tricks", "dropout"],
    ["report", "--experiment", "compare"],
])
def test_an_out_folder_that_cannot_be_made_is_a_one_line_error(command, tmp_path):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "out"  # under a file: no folder can be made there, not even by root
    result = CliRunner().invoke(cli, [*command, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: --out '{out}': the folder cannot be created or written (Not a directory); "
                             "choose another --out\n")


@pytest.mark.parametrize("command", [["predict", "--model", "run-id", "--input", "x.csv"], ["sample", "--model", "run-id"]])
def test_an_out_file_whose_folder_cannot_be_made_is_a_one_line_error(command, tmp_path):
    folder = tmp_path / "a-file"
    folder.write_text("")
    result = CliRunner().invoke(cli, [*command, "--out", str(folder / "out.csv")])
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: --out '{folder / 'out.csv'}': the folder '{folder}' cannot be created or "
                             "written (File exists); choose another --out\n")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_out_in_proc_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "-c", SMOKE, "--out", "/proc/forbidden"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: --out '/proc/forbidden': the folder cannot be created or written "
                                        "(No such file or directory); choose another --out"]


def test_a_file_that_cannot_be_written_later_is_a_one_line_error(monkeypatch):
    import errno

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "runs/x/summary.json")

    monkeypatch.setattr("ssgan.cli.load_config", disk_full)
    result = CliRunner().invoke(cli, ["train", "-c", SMOKE])
    assert result.exit_code == 2 and result.output == "error: 'runs/x/summary.json': No space left on device\n"


@pytest.mark.parametrize("command,phrases", [
    ("train", ["summary.json", "train_state.pt", "--resume", "built-in default config", "8x8 digits with 100 labels",
               "10 epochs"]),
    ("compare", ["report.md", "report.html", "summary.json", "learning_curve.png", "state/"]),
    ("ablate", ["ablation.md", "ablation.json", "ablation.png"]),
    ("report", ["report.md", "report.html", "summary.json"]),
])
def test_help_says_what_out_holds_and_what_train_trains_without_a_config(command, phrases):
    text = " ".join(CliRunner().invoke(cli, [command, "--help"], terminal_width=1000).output.split())
    assert all(p in text for p in phrases), text


def test_train_without_a_config_trains_the_defaults_the_help_names():
    from ssgan.config import Config

    cfg = Config()
    assert (cfg.mode, cfg.data.name, cfg.data.labels, cfg.data.split_seed, cfg.train.epochs) == \
        ("ssgan", "digits", 100, 0, 10)
    assert (cfg.model.arch, cfg.model.d_hidden, cfg.tracking.experiment) == ("mlp", (1000, 500, 250, 250, 250), "ssgan")


def test_a_saved_state_whose_run_is_not_in_the_store_is_a_one_line_error(store_uri):
    from ssgan.errors import SSGANError
    from ssgan.tracking.run import existing_run

    mlflow.set_tracking_uri(store_uri)
    with pytest.raises(SSGANError, match=r"cannot open MLflow run 0{32}: .*is tracking.uri the store the run was"):
        existing_run("0" * 32)
