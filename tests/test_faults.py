"""Faults around training: a full disk for the training state or for the artifacts (ENOSPC injected where
the bytes are written; bench: a 2 MB tmpfs gives the same)."""
import errno
import json
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

import ssgan.training.resume
from ssgan.cli import cli
from ssgan.config import replace
from ssgan.data.splits import load_split
from ssgan.errors import DiskFullError
from ssgan.training.fit import fit
from ssgan.training.resume import load_state, save_state
from tests.test_train import tiny_cfg

ROOT = Path(__file__).resolve().parents[1]


def _full_disk(*args, **kwargs):
    path = Path(args[1])
    path.write_bytes(b"partial")  # what a write that runs out of space leaves
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_while_saving_the_state_is_one_error_and_leaves_the_previous_state(tmp_path, npz_path, monkeypatch):
    cfg = replace(tiny_cfg(npz_path), **{"train.epochs": 2, "train.state_every_s": 0})
    split = load_split(cfg.data)
    saved = []
    fit(cfg, split, progress=False, on_state=saved.append)
    path = tmp_path / "out" / "train_state.pt"
    save_state(path, saved[0], cfg, split.split_hash)
    monkeypatch.setattr(ssgan.training.resume.torch, "save", _full_disk)
    with pytest.raises(DiskFullError, match=f"the disk is full: cannot write {path} .*free space there or choose"):
        save_state(path, saved[0], cfg, split.split_hash)
    monkeypatch.undo()
    assert sorted(p.name for p in path.parent.iterdir()) == ["train_state.pt"]  # no temporary file left
    assert load_state(path)["epoch"] == 1


def _cli_args(npz_path, out, store_uri, *extra):
    return ["-q", "train", "-c", str(ROOT / "configs/smoke.yaml"), "--out", str(out), "--set", "data.name=npz",
            "--set", f"data.path={npz_path}", "--set", "data.labels=6", "--set", f"tracking.uri={store_uri}",
            "--set", "train.epochs=3", "--set", "train.state_every_s=0", *extra]


def test_train_on_a_full_disk_says_so_in_one_line_and_marks_the_run_failed(tmp_path, npz_path, store_uri,
                                                                           monkeypatch):
    monkeypatch.setattr(ssgan.training.resume.torch, "save", _full_disk)
    result = CliRunner().invoke(cli, _cli_args(npz_path, tmp_path / "out", store_uri,
                                               "--set", "tracking.experiment=full-disk"))
    assert result.exit_code == 2
    [line] = result.output.strip().splitlines()[-1:]
    assert line.startswith("error: the disk is full: cannot write ") and "train_state.pt" in line
    assert "Traceback" not in result.output
    assert list((tmp_path / "out").glob("*.tmp")) == []
    client = mlflow.MlflowClient(store_uri)
    [run] = client.search_runs([client.get_experiment_by_name("full-disk").experiment_id])
    assert run.info.status == "FAILED"


def test_a_failed_artifact_upload_is_a_warning_counted_in_the_summary(tmp_path, npz_path, store_uri, monkeypatch,
                                                                       caplog):
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mlflow.MlflowClient, "log_image", no_space)
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="ssgan"):
        result = CliRunner().invoke(cli, _cli_args(npz_path, out, store_uri, "--set", "tracking.sample_every=1"))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["epochs_completed"] == 3  # training went on
    assert summary["failed_uploads"] == [f"the sample grid of epoch {e}" for e in (1, 2, 3)]
    assert "could not record the sample grid of epoch 1 in MLflow (the disk is full); training goes on" in caplog.text
    assert summary["model_uri"]  # the rest was recorded
