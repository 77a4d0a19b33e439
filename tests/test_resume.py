"""Resumable training: a run stopped after any epoch and resumed ends as the uninterrupted run would."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import torch
from click.testing import CliRunner

from ssgan.cli import cli
from ssgan.config import replace
from ssgan.data.splits import load_split
from ssgan.errors import ConfigError, SSGANError
from ssgan.training.resume import exclusive, load_state, previous, remove_state, save_state
from ssgan.training.seeds import fit_seeds, seeds_id
from ssgan.training.fit import fit

from tests.test_train import tiny_cfg

ROOT = Path(__file__).resolve().parents[1]
# Everything that draws random numbers or keeps state across epochs: Gaussian noise, label smoothing and
# flipping, a labeled batch (10) larger than the labeled set (6) so batches span passes, Adam, the EMA
# and a compared EMA with their warm-up counts, a decaying learning rate.
STATEFUL = {"train.epochs": 4, "tricks.label_smoothing": True, "tricks.label_flip": True,
            "train.ema_compare": [0.99], "train.lr_schedule": "linear_decay", "train.decay_start": 0.3}


def _stop_after(epoch):
    def on_epoch(e, *metrics_and_generator):
        if e == epoch:
            raise KeyboardInterrupt

    return on_epoch


def _without_times(history):
    return [{k: v for k, v in m.items() if k != "epoch_seconds"} for m in history]


@pytest.mark.parametrize("stop_epoch", [1, 3])
@pytest.mark.parametrize("mode", ["ssgan", "supervised"])
def test_a_run_stopped_after_an_epoch_and_resumed_ends_as_the_uninterrupted_run(tmp_path, npz_path, stop_epoch, mode,
                                                                                caplog):
    cfg = tiny_cfg(npz_path, mode=mode, **STATEFUL)
    split = load_split(cfg.data)
    whole = fit(cfg, split, progress=False)

    saved = []
    first = fit(cfg, split, progress=False, on_epoch=_stop_after(stop_epoch), on_state=saved.append)
    assert first.stop_reason == "interrupted" and saved[-1]["epoch"] == stop_epoch - 1  # Ctrl-C inside the callback
    assert (f"keeping the {stop_epoch} finished epoch(s); the training state holds {stop_epoch - 1}, so a resume "
            f"trains epoch {stop_epoch} again") in caplog.text  # the log says which epoch is trained twice
    save_state(tmp_path / "state.pt", saved[-1], cfg, split.split_hash)  # through a file, as the CLI does

    rest = fit(cfg, split, progress=False, resume=load_state(tmp_path / "state.pt"))
    assert rest.stop_reason == "completed" and len(rest.history) == 4
    assert _without_times(rest.history) == _without_times(whole.history)
    for a, b in [(whole.classifier, rest.classifier)] + ([(whole.generator, rest.generator)] if mode == "ssgan" else []):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    assert rest.seconds >= saved[-1]["seconds"]


def test_seeds_trained_at_once_resume_as_they_would_have_gone_on(tmp_path, npz_path, caplog):
    cfg, seeds = tiny_cfg(npz_path, **STATEFUL), [0, 1]
    splits = [load_split(replace(cfg, **{"data.split_seed": s}).data) for s in seeds]
    whole = fit_seeds(cfg, splits, seeds, progress=False)

    saved = []
    fit_seeds(cfg, splits, seeds, progress=False, on_epoch=_stop_after(3), on_state=saved.append)
    assert "keeping the 3 finished epoch(s); the training state holds 2" in caplog.text
    save_state(tmp_path / "state.pt", saved[-1], cfg, seeds_id(seeds, splits))
    rest = fit_seeds(cfg, splits, seeds, progress=False, resume=load_state(tmp_path / "state.pt"))
    assert [_without_times(h) for h in rest.histories] == [_without_times(h) for h in whole.histories]
    for a, b in zip(whole.classifiers + whole.generators, rest.classifiers + rest.generators):
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name
    with pytest.raises(ConfigError, match="other labeled data"):  # the same seeds, in another order
        fit_seeds(cfg, splits[::-1], seeds[::-1], resume=load_state(tmp_path / "state.pt"))


def test_the_state_is_handed_on_every_epoch_with_state_every_zero_and_not_after_the_last(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3, "train.state_every_s": 0})
    saved = []
    fit(cfg, load_split(cfg.data), progress=False, on_state=saved.append)
    assert [s["epoch"] for s in saved] == [1, 2]  # a completed run needs no state


def test_a_watchdog_stop_hands_on_the_last_good_epoch(npz_path):
    cfg = tiny_cfg(npz_path, **{"train.epochs": 3, "tricks.watchdog.d_loss_below": 1e9, "tricks.watchdog.patience": 4})
    saved = []
    result = fit(cfg, load_split(cfg.data), progress=False, on_state=saved.append)
    assert result.stop_reason == "d_loss_collapse" and saved[-1]["epoch"] == len(result.history) == 1


def test_resuming_checks_the_state_belongs_to_this_run(tmp_path, npz_path):
    cfg = tiny_cfg(npz_path, **STATEFUL)
    split = load_split(cfg.data)
    saved = []
    fit(cfg, split, progress=False, on_epoch=_stop_after(2), on_state=saved.append)
    save_state(tmp_path / "state.pt", saved[-1], cfg, split.split_hash)
    state = load_state(tmp_path / "state.pt")

    with pytest.raises(ConfigError, match=r"another config: train\.lr \(0\.003 -> 0\.001\)"):
        fit(replace(cfg, **{"train.lr": 0.001}), split, resume=state)
    other = replace(cfg, **{"data.split_seed": 1})
    with pytest.raises(ConfigError, match="another config: data.split_seed"):
        fit(other, load_split(other.data), resume=state)
    with pytest.raises(ConfigError, match="already trained all 1 epochs"):
        fit(replace(cfg, **{"train.epochs": 1}), split, resume={**state, "config": {**state["config"], "train.epochs": 1}})
    # what does not change training may change: where runs are tracked, the watchdog, the save interval
    free = replace(cfg, **{"tracking.experiment": "elsewhere", "tricks.watchdog.patience": 9, "train.state_every_s": 5})
    assert len(fit(free, split, progress=False, resume=state).history) == 4

    (tmp_path / "junk.pt").write_bytes(b"not a state")
    with pytest.raises(SSGANError, match="not a readable ssgan training state"):
        load_state(tmp_path / "junk.pt")
    with pytest.raises(SSGANError, match="no training state at"):
        load_state(tmp_path / "missing.pt")


def _cli_args(npz_path, out, store_uri, *extra):
    return ["train", "-c", str(ROOT / "configs/smoke.yaml"), "--out", str(out),
            "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "data.labels=6",
            "--set", f"tracking.uri={store_uri}", "--set", "tracking.sample_every=0", "--set", "train.state_every_s=0",
            *extra]


def _stop_by_sigterm(args, out):
    """Start `ssgan train ARGS` in a subprocess and stop it with SIGTERM (what a batch system sends before
    it kills a job) once it has saved a training state; returns its stderr. It exits with status 130 (not
    done, resumable) and leaves its MLflow runs KILLED, so nothing takes the half-trained model for a done one."""
    proc = subprocess.Popen([sys.executable, "-c", "from ssgan.cli import main; main()", "-q", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "train_state.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    for summary in out.glob("summary*.json"):
        run = mlflow.MlflowClient(store_of(args)).get_run(json.loads(summary.read_text())["run_id"])
        assert run.info.status == "KILLED" and run.data.tags["stop_reason"] == "interrupted"
    return stderr


def store_of(args):
    return next(a.split("=", 1)[1] for a in args if a.startswith("tracking.uri="))


def _stopped_and_resumed(args, out, epochs):
    """`ssgan train ARGS` stopped by SIGTERM after its first saved state, then the same with --resume, which
    must finish it in the same MLflow run. Returns the two summaries, the first part's stderr and the epochs
    its state held."""
    stderr = _stop_by_sigterm(args, out)
    stopped = json.loads((out / "summary.json").read_text())
    assert stopped["stop_reason"] == "interrupted" and "--resume" in stderr
    done_before = load_state(out / "train_state.pt")["epoch"]
    assert 1 <= done_before < epochs

    result = CliRunner().invoke(cli, ["-q", *args, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run_id"] == stopped["run_id"] and summary["stop_reason"] == "completed"
    assert summary["epochs_completed"] == epochs and not (out / "train_state.pt").exists()
    assert not (out / "train_state.prev.pt").exists()  # a completed run keeps neither state
    client = mlflow.MlflowClient(stopped["tracking_uri"])
    assert client.get_run(summary["run_id"]).info.status == "FINISHED"  # --resume finished it
    assert client.get_run(summary["run_id"]).data.tags["resumed_after_epoch"] == str(done_before)
    # the partial model the stopped part logged is replaced by the final one: the run holds one model
    assert stopped["model_uri"] != summary["model_uri"]
    experiment_id = client.get_run(summary["run_id"]).info.experiment_id
    models = client.search_logged_models([experiment_id], filter_string=f"source_run_id = '{summary['run_id']}'")
    assert [m.model_uri for m in models] == [summary["model_uri"]]
    return stopped, summary, stderr


def test_a_cli_run_stopped_by_sigterm_resumes_into_the_same_mlflow_run(tmp_path, npz_path, store_uri):
    out, epochs = tmp_path / "out", 40
    args = _cli_args(npz_path, out, store_uri, "--set", f"train.epochs={epochs}", "--set", "train.steps_per_epoch=10",
                     "--register", "resumed")
    stopped, summary, stderr = _stopped_and_resumed(args, out, epochs)
    assert stopped["registered_model"] is None and "model not registered" in stderr  # not a partial model
    client = mlflow.MlflowClient(store_uri)
    steps = {m.step for m in client.get_metric_history(summary["run_id"], "loss_d")}
    assert steps == set(range(1, epochs + 1))  # every epoch's metrics, in the one run
    assert summary["registered_model"] == "models:/resumed@champion"
    [version] = client.search_model_versions("name = 'resumed'")
    assert version.source == summary["model_uri"]


def test_a_cli_ensemble_stopped_by_sigterm_resumes_into_its_mlflow_run(tmp_path, npz_path, store_uri):
    out, epochs = tmp_path / "out", 30
    args = _cli_args(npz_path, out, store_uri, "--set", f"train.epochs={epochs}", "--set", "train.steps_per_epoch=10",
                     "--members", "2")
    stopped, summary, _ = _stopped_and_resumed(args, out, epochs)
    assert summary["members"] == 2
    steps = [m.step for m in mlflow.MlflowClient(store_uri).get_metric_history(summary["run_id"],
                                                                               "mean_member_test_accuracy")]
    assert Counter(steps) == Counter(range(1, epochs + 1))  # every epoch once, across both parts


def test_cli_seeds_trained_at_once_stopped_by_sigterm_resume_into_their_mlflow_runs(tmp_path, npz_path, store_uri):
    out, epochs = tmp_path / "out", 40
    args = _cli_args(npz_path, out, store_uri, "--set", f"train.epochs={epochs}", "--set", "train.steps_per_epoch=10",
                     "--seeds", "0,1")
    _stop_by_sigterm(args, out)
    stopped = [json.loads((out / f"summary-seed{s}.json").read_text()) for s in (0, 1)]
    assert {s["stop_reason"] for s in stopped} == {"interrupted"}
    done_before = load_state(out / "train_state.pt")["epoch"]
    assert 1 <= done_before < epochs

    result = CliRunner().invoke(cli, ["-q", *args, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(store_uri)
    for before in stopped:
        summary = json.loads((out / f"summary-seed{before['split_seed']}.json").read_text())
        assert summary["run_id"] == before["run_id"] and summary["stop_reason"] == "completed"
        steps = [m.step for m in client.get_metric_history(summary["run_id"], "lr")]
        assert sorted(steps) == list(range(1, epochs + 1))  # every epoch once, in the seed's one run
        assert client.get_run(summary["run_id"]).data.tags["resumed_after_epoch"] == str(done_before)
    assert not (out / "train_state.pt").exists()


def test_bad_resume_requests_are_one_line_errors(tmp_path, npz_path, store_uri):
    def run(*args):
        result = CliRunner().invoke(cli, ["-q", *args])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        return result.output

    smoke = ["train", "-c", str(ROOT / "configs/smoke.yaml")]
    assert "give its --out" in run(*smoke, "--resume")
    assert "no training state at" in run(*_cli_args(npz_path, tmp_path / "empty", store_uri), "--resume")

    # a state left by an unfinished run is not overwritten by a new run, nor resumed with another config
    out = tmp_path / "out"
    cfg = tiny_cfg(npz_path)
    split = load_split(cfg.data)
    saved = []
    fit(cfg, split, progress=False, on_epoch=_stop_after(2), on_state=saved.append)
    save_state(out / "train_state.pt", saved[-1], cfg, split.split_hash, run_id="abc")
    assert "holds unfinished training (run abc at epoch 1 of" in run(*_cli_args(npz_path, out, store_uri))
    assert "another config" in run(*_cli_args(npz_path, out, store_uri), "--resume")
    assert "is of one run, not of 2 seeds trained at once" in run(*_cli_args(npz_path, out, store_uri), "--resume",
                                                                  "--members", "2")
    assert (out / "train_state.pt").exists()


def test_one_process_at_a_time_trains_from_a_state(tmp_path, npz_path, store_uri):
    state = tmp_path / "out" / "train_state.pt"
    with exclusive(state):  # as a running `ssgan train --out out` holds it
        with pytest.raises(SSGANError, match=f"in use by process {os.getpid()}"):
            with exclusive(state):
                pass
        result = CliRunner().invoke(cli, ["-q", *_cli_args(npz_path, tmp_path / "out", store_uri), "--resume"])
        assert result.exit_code == 2 and result.output.count("\n") == 1
        assert f"{state} is in use by process {os.getpid()}; wait for it to stop" in result.output
    assert not state.with_name("train_state.pt.lock").exists()  # released and removed
    with exclusive(state):
        pass


def test_the_state_before_the_latest_is_kept_and_a_truncated_latest_falls_back_to_it(tmp_path, npz_path, caplog):
    cfg = tiny_cfg(npz_path, **{**STATEFUL, "train.state_every_s": 0})  # a state after every epoch but the last
    split = load_split(cfg.data)
    saved = []
    whole = fit(cfg, split, progress=False, on_state=saved.append)
    path = tmp_path / "train_state.pt"
    for state in saved[:3]:  # epochs 1, 2, 3
        save_state(path, state, cfg, split.split_hash)
    assert load_state(path)["epoch"] == 3 and load_state(previous(path))["epoch"] == 2
    path.write_bytes(path.read_bytes()[:1000])  # a truncated latest state (a crash or a full disk mid-copy)
    with caplog.at_level("WARNING", logger="ssgan"):
        assert load_state(path)["epoch"] == 2
    assert "not a readable ssgan training state" in caplog.text and "continuing from the state before it" in caplog.text
    resumed = fit(cfg, split, progress=False, resume=load_state(path))
    assert [m["loss_d"] for m in resumed.history] == [m["loss_d"] for m in whole.history]
    remove_state(path)
    assert not path.exists() and not previous(path).exists()


def test_an_error_inside_training_saves_the_last_good_epoch_first(tmp_path, npz_path):
    cfg = tiny_cfg(npz_path, **{**STATEFUL, "train.state_every_s": 3600})  # no periodic save: only the error's
    split = load_split(cfg.data)
    saved = []

    def fail_in_epoch_3(epoch, *rest):
        if epoch == 3:
            raise RuntimeError("a fault inside training")

    with pytest.raises(RuntimeError, match="a fault inside training"):
        fit(cfg, split, progress=False, on_epoch=fail_in_epoch_3, on_state=saved.append)
    assert [s["epoch"] for s in saved] == [2]  # epoch 3's metrics were not handed on: the state holds 2
