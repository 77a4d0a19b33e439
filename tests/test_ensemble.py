"""Ensembles: several ssgan runs of one split that differ only in their training seed, their class
probabilities averaged (ssgan/tracking/ensemble.py, `ssgan compare --methods ssgan_ensemble`, bench/ensemble.py)."""
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from ssgan.cli import cli
from ssgan.evaluation.metrics import evaluate_ensemble
from ssgan.training.seeds import member_seeds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from ensemble import ensemble_report  # noqa: E402

Y = np.array([0, 1, 2, 2])


def probs(rows):
    return np.array(rows, dtype=np.float32)


def test_the_ensemble_predicts_the_class_of_the_mean_probability():
    # member a is wrong on row 2 (reads 2 as 1) but unsure; member b is wrong on row 0 and sure of it
    a = probs([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.0, 0.1, 0.9]])
    b = probs([[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9], [0.1, 0.1, 0.8]])
    report = ensemble_report([a, b], ["a", "b"], Y)
    assert report["member_error_pct"] == [25.0, 25.0]
    assert report["mean_member_error_pct"] == 25.0
    # mean: row 0 -> [0.55, 0.375, 0.075] right; row 2 -> [0.05, 0.3, 0.65] right
    assert report["ensemble_error_pct"] == 0.0
    assert report["members_agree_fraction"] == 0.5
    assert report["member_largest_confusions"] == [[[2, 1, 1]], [[0, 1, 1]]]
    assert report["ensemble_largest_confusions"] == []


def test_a_confident_wrong_member_can_outvote_an_unsure_right_one():
    right_unsure = probs([[0.4, 0.35, 0.25], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    wrong_sure = probs([[0.0, 1.0, 0.0], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    report = ensemble_report([right_unsure, wrong_sure], ["r", "w"], Y)
    assert report["member_error_pct"] == [0.0, 25.0]
    assert report["ensemble_error_pct"] == 25.0
    assert report["ensemble_largest_confusions"] == [[0, 1, 1]]


def test_members_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        ensemble_report([probs([[1, 0, 0]] * 4), probs([[1, 0]] * 4)], ["a", "b"], Y)
    with pytest.raises(ValueError, match="4 test labels"):
        ensemble_report([probs([[1, 0, 0]] * 3)], ["a"], Y)


class FixedProbs(nn.Module):
    """A classifier whose logits are given: (logits, features) as the discriminator returns them."""

    def __init__(self, probs):
        super().__init__()
        self.logits = nn.Parameter(torch.log(torch.tensor(probs)), requires_grad=False)

    def forward(self, x):
        rows = x.flatten(1)[:, 0].long()  # x holds row indices
        return self.logits[rows], self.logits[rows]


def test_the_toolkit_ensemble_scores_the_mean_probability_and_each_member():
    a = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.5, 0.4], [0.05, 0.05, 0.9]]
    b = [[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9], [0.1, 0.1, 0.8]]
    x = torch.arange(4, dtype=torch.float32).unsqueeze(1)
    ev, members = evaluate_ensemble([FixedProbs(a), FixedProbs(b)], x, torch.tensor(Y), ("a", "b", "c"))
    assert [m.accuracy for m in members] == [0.75, 0.75]
    assert ev.accuracy == 1.0
    assert ev.predicted.tolist() == [0, 1, 2, 2]


def test_member_zero_is_the_plain_run_and_members_differ_by_a_stride():
    assert member_seeds(3, 3) == [3, 1003, 2003]
    assert member_seeds(0, 1) == [0]


def test_compare_trains_an_ensemble_per_split_next_to_the_plain_run(tmp_path, npz_path, store_uri):
    """`--methods ssgan,ssgan_ensemble --members 2`: the ensemble's child run is on the same split, its member
    0 is the plain ssgan run (same accuracy), and its own accuracy is that of the members' mean."""
    out = tmp_path / "out"
    args = ["-q", "compare", "-c", str(Path(__file__).resolve().parents[1] / "configs/smoke.yaml"), "--labels", "6",
            "--seeds", "1", "--methods", "ssgan,ssgan_ensemble", "--members", "2", "--out", str(out)]
    for o in ("data.name=npz", f"data.path={npz_path}", "tracking.experiment=ensemble", "tracking.sample_every=0",
              f"tracking.uri={store_uri}"):
        args += ["--set", o]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    mlflow.set_tracking_uri(store_uri)
    runs = {r.data.tags["method"]: r for r in mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{_parent(out)}'")}
    plain, ens = runs["ssgan"], runs["ssgan_ensemble"]
    assert ens.data.tags["split_hash"] == plain.data.tags["split_hash"]
    assert ens.data.tags["members"] == "2" and ens.data.tags["member_train_seeds"] == "0,1000"
    assert ens.data.tags["outcome"] == "finished" and ens.info.status == "FINISHED"
    m = ens.data.metrics
    assert m["member0_test_accuracy"] == pytest.approx(plain.data.metrics["test_accuracy"])
    assert m["mean_member_test_accuracy"] == pytest.approx((m["member0_test_accuracy"] + m["member1_test_accuracy"]) / 2)
    assert 0.0 <= m["test_accuracy"] <= 1.0 and "test_macro_f1" in m
    artifacts = {f.path for f in mlflow.MlflowClient().list_artifacts(ens.info.run_id)}
    assert "confusion_matrix.png" in artifacts  # (confused_examples.png is for images; these rows are a table)
    assert "ssgan_ensemble" in (out / "report.md").read_text()


def _parent(out: Path) -> str:
    import json

    return json.loads((out / "summary.json").read_text())["parent_run_id"]


def test_the_ensemble_module_outputs_the_log_of_the_members_mean_probability():
    torch.manual_seed(0)
    members = [nn.Linear(4, 4) for _ in range(3)]  # 3 real classes + an explicit fake logit

    class D(nn.Module):
        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(x), x

    from ssgan.nets.inference import Ensemble

    x = torch.randn(6, 4)
    logits, features = Ensemble([D(m) for m in members], num_classes=3)(x)
    mean = torch.stack([torch.softmax(m(x)[:, :3], dim=1) for m in members]).mean(0)
    assert logits.shape == (6, 3) and torch.equal(features, x)
    assert torch.allclose(torch.softmax(logits, dim=1), mean, atol=1e-6)


def test_train_members_logs_one_ensemble_model_that_predicts_as_scored(tmp_path, npz_path, store_uri):
    """`ssgan train --members 2`: one MLflow run; its checkpoint rebuilds the ensemble, and the rebuilt
    model's accuracy on the test set is the one the run reports."""
    from ssgan.config import load_config
    from ssgan.data.splits import load_split
    from ssgan.serving.predictor import Predictor

    overrides = ["data.name=npz", f"data.path={npz_path}", "tracking.experiment=ensemble-train",
                 "tracking.sample_every=0", f"tracking.uri={store_uri}", "data.labels=6"]
    args = ["-q", "train", "-c", str(Path(__file__).resolve().parents[1] / "configs/smoke.yaml"), "--members", "2",
            "--out", str(tmp_path / "run")]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    import json

    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["members"] == 2 and summary["train_seeds"] == [0, 1000]
    mlflow.set_tracking_uri(store_uri)
    state = torch.load(mlflow.artifacts.download_artifacts(run_id=summary["run_id"], artifact_path="checkpoint.pt"),
                       weights_only=True)
    assert state["members"] == 2
    predictor = Predictor.from_checkpoint(state)
    split = load_split(load_config(str(Path(__file__).resolve().parents[1] / "configs/smoke.yaml"), overrides).data)
    probs = predictor.predict_proba(split.preprocess.inverse(split.x_test))  # raw test inputs, as a user has them
    assert float((probs.argmax(1) == split.y_test.numpy()).mean()) == pytest.approx(summary["test_accuracy"])
    run = mlflow.get_run(summary["run_id"])
    assert run.data.tags["members"] == "2"
    assert summary["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])
    assert {"member0_test_accuracy", "member1_test_accuracy"} <= set(run.data.metrics)


@pytest.mark.parametrize("extra", [["--members", "1"], ["--members", "2", "--seeds", "0,1"],
                                   ["--members", "2", "--mode", "supervised"]])
def test_bad_members_for_train_is_a_one_line_error(extra, tmp_path):
    result = CliRunner().invoke(cli, ["train", "-c", str(Path(__file__).resolve().parents[1] / "configs/smoke.yaml"),
                                      *extra, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --members"), result.output


def test_bench_ensemble_scores_runs_of_any_config_and_refuses_probabilities_of_another_test_set(tmp_path):
    from ssgan.config import load_config
    from ssgan.data.splits import load_split

    config = str(Path(__file__).resolve().parents[1] / "configs/digits-20-best.yaml")
    y_test = load_split(load_config(config).data).y_test.numpy()
    right = np.eye(10, dtype=np.float32)[y_test]
    wrong = np.eye(10, dtype=np.float32)[(y_test + 1) % 10]
    np.save(tmp_path / "a-probs.npy", 0.9 * right + 0.1 * wrong)
    np.save(tmp_path / "b-probs.npy", 0.4 * right + 0.6 * wrong)  # alone always wrong; in the mean, outvoted
    np.save(tmp_path / "short-probs.npy", right[:10])
    script = str(Path(__file__).resolve().parents[1] / "bench/ensemble.py")

    done = subprocess.run([sys.executable, script, str(tmp_path / "a-probs.npy"), str(tmp_path / "b-probs.npy"),
                           "--config", config, "--out", str(tmp_path / "e.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "e.json").read_text())
    assert report["member_error_pct"] == [0.0, 100.0] and report["ensemble_error_pct"] == 0.0

    done = subprocess.run([sys.executable, script, str(tmp_path / "short-probs.npy"), "--config", config],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'short-probs.npy'} has 10 rows, the test set of {config} has {len(y_test)}; "
        "give the runs' config with --config"]


def test_a_member_the_watchdog_stops_is_left_out_of_the_average(tmp_path, npz_path, store_uri,
                                                                second_fails_in_epoch_2):
    """The watchdog stops member 1 at the end of epoch 2. The other member trains on, and the run's model
    averages only it: the ensemble's accuracy is member 0's, and the run says which member was left out."""
    out = tmp_path / "out"
    args = second_fails_in_epoch_2(npz_path, out, store_uri, "--members", "2")
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output  # the ensemble completed, with one member
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["members_averaged"] == 1
    assert list(summary["members_stopped"]) == ["1"] and "d_loss_collapse after 1 good epoch" in summary["members_stopped"]["1"]
    assert summary["test_accuracy"] == pytest.approx(summary["member0_test_accuracy"])
    run = mlflow.MlflowClient(store_uri).get_run(summary["run_id"])
    assert run.data.tags["members_stopped"].startswith("member 1: d_loss_collapse after 1 good epoch")
    history = mlflow.MlflowClient(store_uri).get_metric_history(summary["run_id"], "mean_member_test_accuracy")
    assert sorted(m.step for m in history) == [1, 2, 3]  # epoch 1 over both members, then member 0's alone


def test_shared_errors_counts_the_test_images_every_run_gets_wrong(tmp_path):
    """bench/shared_errors.py: the floor under any average of these runs, and a picture of it."""
    from ssgan.config import load_config
    from ssgan.data.splits import load_split

    config = str(Path(__file__).resolve().parents[1] / "configs/digits-20-best.yaml")
    y_test = load_split(load_config(config).data).y_test.numpy()
    right = np.eye(10, dtype=np.float32)[y_test]
    a, b = right.copy(), right.copy()
    a[:10] = np.eye(10, dtype=np.float32)[(y_test[:10] + 1) % 10]  # a is wrong on rows 0-9, b on rows 5-14
    b[5:15] = np.eye(10, dtype=np.float32)[(y_test[5:15] + 1) % 10]
    np.save(tmp_path / "a-probs.npy", a)
    np.save(tmp_path / "b-probs.npy", b)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "bench/shared_errors.py"),
                           str(tmp_path / "a-probs.npy"), str(tmp_path / "b-probs.npy"), "--config", config,
                           "--out", str(tmp_path / "s.json"), "--figure", str(tmp_path / "s.png")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["run_errors"] == [10, 10]
    assert (report["wrong_in_all"], report["wrong_in_half_or_more"], report["wrong_in_any"]) == (5, 15, 15)
    assert report["wrong_in_all_indices"] == [5, 6, 7, 8, 9]
    assert sum(n for _, _, n in report["wrong_in_all_read_as"]) == 5
    assert all(p == (t + 1) % 10 for t, p, _ in report["wrong_in_all_read_as"])
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
