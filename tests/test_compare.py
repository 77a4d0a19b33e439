"""`ssgan compare` and `ssgan report`: the same splits for every method, the paired gain, a report that the
store alone reproduces, resume, failures that do not stop a comparison, and one-line errors."""
import html
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import mlflow
import pytest
import torch
from click.testing import CliRunner
from conftest import write_tiny_npz

from ssgan.cli import cli
from ssgan.experiments.compare import run_comparison
from ssgan.experiments.origin import ConfigOrigin
from ssgan.experiments.plan import DEFAULT_METHODS, Plan
from ssgan.config import load_config
from ssgan.experiments.report import collect_rows, gain_sentence, summarize

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/smoke.yaml")
KNOWN_LABELS = 80  # tiny set: 120 training rows, every third label hidden


def run_cli(*args):
    return CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)


def data_overrides(npz: Path, experiment: str, store: Optional[str] = None) -> list[str]:
    """The tiny set, an experiment, and a store (None: $MLFLOW_TRACKING_URI or the default)."""
    return ["data.name=npz", f"data.path={npz}", f"tracking.experiment={experiment}", "tracking.sample_every=0",
            *([f"tracking.uri={store}"] if store else [])]


def data_args(npz: Path, experiment: str, store: Optional[str] = None) -> list[str]:
    return [a for o in data_overrides(npz, experiment, store) for a in ("--set", o)]


def children(store: str, parent: str) -> list:
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent}'",
                              output_format="list")


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, store_uri):
    """2 budgets x 2 seeds x 4 methods on the tiny set, through the CLI."""
    tmp = tmp_path_factory.mktemp("compare")
    out = tmp / "out"
    overrides = data_overrides(write_tiny_npz(tmp / "tiny.npz"), "compare", store_uri)
    args = ["compare", "-c", SMOKE, "--labels", "6,all", "--seeds", "2", "--out", str(out),
            *[a for o in overrides for a in ("--set", o)]]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    return {"out": out, "summary": json.loads((out / "summary.json").read_text()), "stdout": result.stdout,
            "overrides": overrides}


def test_every_method_sees_the_same_labeled_examples(comparison, store_uri):
    runs = children(store_uri, comparison["summary"]["parent_run_id"])
    assert len(runs) == 2 * 2 * len(DEFAULT_METHODS)
    tags = [r.data.tags for r in runs]
    assert {t["method"] for t in tags} == set(DEFAULT_METHODS)
    hashes = {}
    for t in tags:
        hashes.setdefault((t["budget"], t["split_seed"]), set()).add(t["split_hash"])
    assert all(len(h) == 1 for h in hashes.values()), hashes  # one labeled set per (budget, seed), whatever the method
    assert hashes["6", "0"] != hashes["6", "1"]  # the seed draws the labels
    assert hashes["all", "0"] == hashes["all", "1"]  # all labels: nothing to draw
    assert {t["labels"] for t in tags if t["budget"] == "all"} == {str(KNOWN_LABELS)}
    assert all(t["outcome"] == "finished" and r.info.status == "FINISHED" for t, r in zip(tags, runs))
    assert all({"test_accuracy", "test_macro_f1", "test_balanced_accuracy"} <= set(r.data.metrics) for r in runs)


def test_compare_writes_the_report_and_logs_it_to_the_parent(comparison, store_uri):
    out, summary = comparison["out"], comparison["summary"]
    assert summary["complete"] and summary["failed"] == []
    assert [b["budget"] for b in summary["by_budget"]] == ["6", "all"]
    assert [b["labels"] for b in summary["by_budget"]] == [6, KNOWN_LABELS]
    for b in summary["by_budget"]:
        assert [m["method"] for m in b["methods"]] == list(DEFAULT_METHODS) and all(m["n"] == 2 for m in b["methods"])
        acc = {(r["method"], r["split_seed"]): r["test_accuracy"] for r in summary["runs"] if r["budget"] == b["budget"]}
        assert b["gain"]["diffs"] == [acc["ssgan", s] - acc["supervised", s] for s in (0, 1)]
        assert b["methods"][0]["accuracy_mean"] == pytest.approx((acc["ssgan", 0] + acc["ssgan", 1]) / 2)
    best = summary["best_ssgan"]
    assert best["test_accuracy"] == max(r["test_accuracy"] for r in summary["runs"] if r["method"] == "ssgan")

    md = (out / "report.md").read_text()
    assert "## 6 labels" in md and f"## all labels ({KNOWN_LABELS})" in md and "ssgan - supervised:" in md
    assert "| label_spreading | 2 / 2 |" in md and md == comparison["stdout"]
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and 'src="http' not in page and "learning_curve.png" not in page
    for png in ("learning_curve.png", "confusion_best_ssgan.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    logged = {a.path for a in mlflow.MlflowClient(store_uri).list_artifacts(summary["parent_run_id"])}
    assert set(summary["files"]) <= logged and "config.yaml" in logged


def test_the_report_states_the_config_file_its_overrides_and_the_epochs(comparison, store_uri):
    """So that a shortened smoke comparison (--set train.epochs=5) does not read as the method's result."""
    summary, overrides = comparison["summary"], comparison["overrides"]
    assert summary["config"] == {"source": SMOKE, "overrides": overrides, "epochs": 2}  # smoke.yaml: 2 epochs
    line = f"Config: {SMOKE} with overrides {'; '.join(overrides)} (2 epochs per network run)."
    md = (comparison["out"] / "report.md").read_text()
    assert md.split("\n\n")[1] == line  # right under the title
    assert html.escape(line) in (comparison["out"] / "report.html").read_text()
    tags = mlflow.MlflowClient(store_uri).get_run(summary["parent_run_id"]).data.tags
    assert (tags["config"], tags["overrides"], tags["epochs"]) == (SMOKE, "; ".join(overrides), "2")


def test_config_origin_without_overrides_and_from_tags():
    cfg = load_config(SMOKE, ["train.epochs=5"])
    origin = ConfigOrigin.of(cfg, "configs/smoke.yaml", ["train.epochs=5"])
    assert origin.sentence() == "Config: configs/smoke.yaml with overrides train.epochs=5 (5 epochs per network run)."
    assert ConfigOrigin.from_tags(origin.tags()) == origin and ConfigOrigin.from_tags({"kind": "compare"}) is None
    plain = ConfigOrigin.of(load_config(None), None, [])
    assert plain.tags()["overrides"] == "none" and ConfigOrigin.from_tags(plain.tags()) == plain
    assert plain.sentence() == "Config: the built-in defaults, no overrides (10 epochs per network run)."


def test_report_from_the_store_reproduces_the_comparison(comparison, store_uri, tmp_path):
    parent = comparison["summary"]["parent_run_id"]
    for extra in ([], ["--parent", parent]):  # the latest comparison by default, or the one named
        out = tmp_path / f"report{len(extra)}"
        result = run_cli("report", "--experiment", "compare", "--tracking-uri", store_uri, "--out", str(out), *extra)
        assert result.exit_code == 0, result.output
        assert (out / "summary.json").read_text() == (comparison["out"] / "summary.json").read_text()
        assert (out / "report.md").read_text() == (comparison["out"] / "report.md").read_text()


def test_resume_skips_finished_runs(tmp_path, npz_path, store_uri):
    args = ["compare", "-c", SMOKE, "--labels", "6", "--seeds", "2", "--methods", "supervised,label_spreading",
            "--out", str(tmp_path / "out"), *data_args(npz_path, "resume", store_uri)]
    assert run_cli(*args).exit_code == 0
    parent = json.loads((tmp_path / "out/summary.json").read_text())["parent_run_id"]
    first = {r.info.run_id: r for r in children(store_uri, parent)}
    crashed = next(r for r in first.values() if r.data.tags["method"] == "supervised" and r.data.tags["split_seed"] == "1")
    mlflow.MlflowClient().set_terminated(crashed.info.run_id, "FAILED")  # as if that run had crashed

    result = run_cli(*args, "--resume")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["parent_run_id"] == parent and summary["complete"]
    now = {r.info.run_id: r for r in children(store_uri, parent)}
    (new,) = set(now) - set(first)  # only the crashed run was trained again
    assert now[new].data.tags["method"] == "supervised" and now[new].data.tags["split_seed"] == "1"
    assert new in {r["run_id"] for r in summary["runs"]} and crashed.info.run_id not in {r["run_id"] for r in summary["runs"]}

    assert run_cli(*args, "--resume").exit_code == 0
    assert len(children(store_uri, parent)) == len(now)  # nothing left to do
    without = run_cli(*args)  # no --resume: a new comparison
    assert json.loads((tmp_path / "out/summary.json").read_text())["parent_run_id"] != parent, without.output


def test_seeds_at_once_give_the_same_runs_on_the_same_splits(tmp_path, npz_path, store_uri):
    from ssgan.experiments.compare import run_batches

    plan = Plan.parse("6", 3, "ssgan,label_spreading")
    assert run_batches(plan.runs(), True) == [("ssgan", "6", [0, 1, 2]), ("label_spreading", "6", [0]),
                                           ("label_spreading", "6", [1]), ("label_spreading", "6", [2])]
    assert run_batches(plan.runs(), False) == [(m, b, [s]) for m, b, s in plan.runs()]
    args = ["compare", "-c", SMOKE, "--labels", "6", "--seeds", "3", "--methods", "ssgan,supervised,label_spreading",
            "--seeds-at-once", "--out", str(tmp_path / "out"), *data_args(npz_path, "at-once", store_uri)]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["complete"]
    runs = children(store_uri, summary["parent_run_id"])
    assert len(runs) == 9 and all(r.data.tags["outcome"] == "finished" for r in runs)
    hashes = {}
    for r in runs:
        hashes.setdefault(r.data.tags["split_seed"], set()).add(r.data.tags["split_hash"])
        if r.data.tags["method"] in ("ssgan", "supervised"):
            assert r.data.tags["trained_with_seeds"] == "0,1,2"
            assert r.data.params["data.split_seed"] == r.data.tags["split_seed"]
    assert all(len(h) == 1 for h in hashes.values()) and len(hashes) == 3  # same labels per seed for every method


def test_a_failed_run_is_recorded_and_the_comparison_goes_on(tmp_path, npz_path, store_uri, monkeypatch):
    """The watchdog stops every ssgan run here, and label spreading raises: both are listed, supervised is fine."""
    def broken(estimator, split):
        raise RuntimeError("boom")

    monkeypatch.setattr("ssgan.experiments.baselines.fit_and_score", broken)
    cfg = load_config(SMOKE, [*data_overrides(npz_path, "failing", store_uri),
                              "tricks.watchdog.d_loss_below=1e9", "tricks.watchdog.patience=7"])
    summary = run_comparison(cfg, Plan.parse("6", 1, "ssgan,supervised,label_spreading"), tmp_path / "out", progress=False)

    assert not summary["complete"]
    failed = {f["method"]: f for f in summary["failed"]}
    assert set(failed) == {"ssgan", "label_spreading"}
    assert failed["ssgan"]["failure_reason"].startswith("d_loss_collapse: ")
    assert failed["label_spreading"]["failure_reason"] == "RuntimeError: boom"
    (table,) = summary["by_budget"]
    assert [m["n"] for m in table["methods"]] == [0, 1, 0] and table["gain"]["n"] == 0
    assert summary["best_ssgan"] is None
    md = (tmp_path / "out/report.md").read_text()
    assert "## Failed or missing runs" in md and "RuntimeError: boom" in md and "| ssgan | 6 | 0 | failed | d_loss_collapse" in md

    client = mlflow.MlflowClient()
    runs = {f["method"]: client.get_run(f["run_id"]) for f in summary["failed"]}
    assert runs["label_spreading"].info.status == "FAILED"
    assert runs["ssgan"].info.status == "FINISHED" and runs["ssgan"].data.tags["outcome"] == "failed"
    assert runs["ssgan"].data.tags["stop_reason"] == "d_loss_collapse"


def row(method, seed, acc, status="finished"):
    return {"method": method, "budget": "20", "split_seed": seed, "status": status, "failure_reason": None,
            "labels": 20, "test_accuracy": acc, "test_macro_f1": acc, "seconds": 1.0, "run_id": f"{method}{seed}"}


def test_the_gain_and_its_interval_from_hand_made_numbers():
    # per-seed differences 0.10, 0.05, 0.05: mean 1/15, sd 0.05/sqrt(3), standard error 1/60, t = 4 on 2 df
    rows = [row("supervised", 2, 0.80), row("ssgan", 0, 0.80), row("supervised", 0, 0.70), row("ssgan", 1, 0.90),
            row("supervised", 1, 0.85), row("ssgan", 2, 0.85),
            row("ssgan", 3, 0.99, "failed"), row("supervised", 3, 0.10)]  # a failed run leaves its seed unpaired
    (b,) = summarize(rows, Plan(("20",), 4, ("ssgan", "supervised")))["by_budget"]
    g = b["gain"]
    assert g["n"] == 3 and g["seeds"] == [0, 1, 2]
    assert g["mean"] == pytest.approx(1 / 15)
    half = 4.302652729911275 / 60  # t(0.975, 2 df) x standard error
    assert g["ci95"] == pytest.approx([1 / 15 - half, 1 / 15 + half])
    assert g["t_test_p"] == pytest.approx(1 - 4 / math.sqrt(18))  # two-sided: 2 (1 - F(4)), F the t(2) cdf
    assert g["wilcoxon_p"] == pytest.approx(0.25)  # exact: all 3 signs positive, 2 / 2^3
    ssgan, supervised = b["methods"]
    assert ssgan["n"] == 3 and ssgan["accuracy_mean"] == pytest.approx(0.85)
    assert ssgan["accuracy_std"] == pytest.approx(0.05) and supervised["n"] == 4
    assert gain_sentence(g).startswith("ssgan - supervised: +6.7 points (95 % CI [-0.5, +13.8]; paired t-test p = 0.0572")


def test_one_pair_has_no_interval_and_says_so():
    summary = summarize([row("ssgan", 0, 0.9), row("supervised", 0, 0.8)], Plan(("20",), 1, ("ssgan", "supervised")))
    g = summary["by_budget"][0]["gain"]
    assert g["mean"] == pytest.approx(0.1) and g["ci95"] == [None, None] and g["t_test_p"] is None
    assert gain_sentence(g) == ("ssgan - supervised: +10.0 points (95 % CI n/a; paired t-test p = n/a, "
                                "Wilcoxon signed-rank p = n/a; 1 paired seed).")
    json.dumps(summary, allow_nan=False)  # plain JSON: no NaN


@pytest.mark.parametrize(
    "args,message",
    [
        (["--methods", "ssgan,magic"], "unknown method 'magic'; choose from ssgan, supervised, vat, mean_teacher, "
                                        "pi_model, ssgan_ensemble, label_spreading, self_training"),
        (["--methods", "ssgan_ensemble", "--members", "1"], "--members must be >= 2 (runs averaged per split by "
                                                            "ssgan_ensemble), got 1"),
        (["--labels", "5000"], "--labels 5000 is more than the 1347 labeled training examples of digits"),
        (["--labels", "20,5"], "--labels 5 is fewer than one label per class (10 classes)"),
        (["--labels", "20,many"], "--labels: 'many' is neither a number of labels nor 'all'"),
        (["--labels", "20,all,20"], "--labels lists 20 twice"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--set", "train.epoch=3"], "unknown config key 'train.epoch'"),
    ],
)
def test_bad_compare_input_is_a_one_line_error(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["compare", "-c", SMOKE, "--labels", "20", "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output
    assert not (tmp_path / "out").exists()  # nothing ran


def test_report_of_a_missing_experiment_or_parent_is_a_one_line_error(store_uri, tmp_path):
    mlflow.set_tracking_uri(store_uri)
    if mlflow.get_experiment_by_name("not-a-comparison") is None:
        mlflow.create_experiment("not-a-comparison")
    other = mlflow.MlflowClient().create_run(mlflow.get_experiment_by_name("not-a-comparison").experiment_id)
    cases = [
        (["--experiment", "no-such-experiment"], f"experiment 'no-such-experiment' does not exist in {store_uri}"),
        (["--experiment", "not-a-comparison"], "experiment 'not-a-comparison' holds no comparison (no run tagged kind=compare)"),
        (["--experiment", "not-a-comparison", "--parent", "0" * 32], f"run '{'0' * 32}' does not exist in {store_uri}"),
        (["--experiment", "not-a-comparison", "--parent", other.info.run_id],
         f"run '{other.info.run_id}' is not a comparison of experiment 'not-a-comparison'"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, ["report", "--tracking-uri", store_uri, "--out", str(tmp_path), *args])
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines() == [f"error: {message}"]


def test_ctrl_c_stops_the_comparison_and_resume_finishes_it(tmp_path, npz_path, store_uri, monkeypatch):
    def interrupted(method, cfg, run_id=None, nested=True):
        raise KeyboardInterrupt

    cfg = load_config(SMOKE, data_overrides(npz_path, "interrupted", store_uri))
    plan = Plan.parse("6", 1, "supervised,label_spreading,self_training")
    with monkeypatch.context() as m:
        m.setattr("ssgan.experiments.runs.run_baseline", interrupted)
        summary = run_comparison(cfg, plan, tmp_path / "out", progress=False)
    assert [(r["method"], r["status"], r["failure_reason"]) for r in summary["runs"]] == [
        ("supervised", "finished", None), ("label_spreading", "failed", "interrupted by the user"),
        ("self_training", "missing", "not run")]
    client = mlflow.MlflowClient()
    assert client.get_run(summary["parent_run_id"]).info.status == "KILLED"
    assert client.get_run(summary["runs"][1]["run_id"]).info.status == "KILLED"

    resumed = run_comparison(cfg, plan, tmp_path / "out", resume=True, progress=False)
    assert resumed["parent_run_id"] == summary["parent_run_id"] and resumed["complete"]
    assert resumed["runs"][0]["run_id"] == summary["runs"][0]["run_id"]  # the finished run was kept
    assert client.get_run(summary["parent_run_id"]).info.status == "FINISHED"


def fake_run(seed: int, status: str, start: int, outcome: Optional[str] = None) -> SimpleNamespace:
    tags = {"method": "ssgan", "budget": "20", "split_seed": str(seed), "labels": "20", "split_hash": "h",
            **({"outcome": outcome} if outcome else {})}
    info = SimpleNamespace(status=status, start_time=start, end_time=None if status == "RUNNING" else start + 2000,
                           run_id=f"run{seed}-{start}")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, metrics={"test_accuracy": 0.5}))


def test_each_run_of_the_plan_is_read_from_its_latest_child_run():
    runs = [fake_run(0, "FINISHED", start=9, outcome="finished"), fake_run(0, "FAILED", start=1),  # resumed
            fake_run(1, "RUNNING", start=3), fake_run(3, "FINISHED", start=4)]  # seed 3 is not in the plan
    rows = collect_rows(Plan(("20",), 3, ("ssgan",)), runs)
    assert [(r["split_seed"], r["status"], r["run_id"]) for r in rows] == [
        (0, "finished", "run0-9"), (1, "unfinished", "run1-3"), (2, "missing", None)]
    assert rows[0]["seconds"] == 2.0 and rows[0]["test_accuracy"] == 0.5 and rows[1]["seconds"] is None


def _interrupted_comparison(tmp_path, npz_path, store_uri, monkeypatch, experiment):
    """An ssgan comparison of 4 epochs stopped by Ctrl-C just after epoch 3's metrics reached MLflow, before
    its state was saved (the last state is epoch 2's, as `train.state_every_s=0` saves after every epoch):
    like a kill between two saves."""
    from ssgan.tracking.logger import RunLogger

    cfg = load_config(SMOKE, data_overrides(npz_path, experiment, store_uri) + ["train.epochs=4", "train.state_every_s=0"])
    plan = Plan.parse("6", 1, "ssgan")
    log_epoch = RunLogger.log_epoch

    def stop_in_epoch_3(self, epoch, *rest):
        log_epoch(self, epoch, *rest)
        if epoch == 3:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(RunLogger, "log_epoch", stop_in_epoch_3)
        first = run_comparison(cfg, plan, tmp_path / "out", progress=False)
    return cfg, plan, first


def test_an_interrupted_network_run_resumes_from_its_saved_state_in_its_own_run(tmp_path, npz_path, store_uri,
                                                                                monkeypatch):
    cfg, plan, first = _interrupted_comparison(tmp_path, npz_path, store_uri, monkeypatch, "resume-state")
    run_id = first["runs"][0]["run_id"]
    assert first["runs"][0]["failure_reason"] == "interrupted by the user"
    assert first["interrupted"] and not first["complete"]  # `ssgan compare` exits 130: resumable, not failed
    state = tmp_path / "out" / "state" / first["parent_run_id"] / "ssgan-6-seed0.pt"
    assert torch.load(state, weights_only=True)["epoch"] == 2

    resumed = run_comparison(cfg, plan, tmp_path / "out", resume=True, progress=False)
    assert resumed["complete"] and resumed["runs"][0]["run_id"] == run_id  # the same MLflow run, finished
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_after_epoch"] == "2"
    assert run.data.tags["outcome"] == "finished" and "failure_reason" not in run.data.tags
    assert resumed["runs"][0]["seconds"] == run.data.metrics["train_seconds"]  # not the pause between the parts
    assert not (tmp_path / "out" / "state").exists()  # a completed run's state is removed

    whole_cfg = load_config(SMOKE, data_overrides(npz_path, "resume-state-whole", store_uri)
                            + ["train.epochs=4", "train.state_every_s=0"])
    whole = run_comparison(whole_cfg, plan, tmp_path / "whole", progress=False)
    assert resumed["runs"][0]["test_accuracy"] == whole["runs"][0]["test_accuracy"]
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss_d")
    whole_history = mlflow.MlflowClient().get_metric_history(whole["runs"][0]["run_id"], "loss_d")
    assert [(m.step, m.value) for m in history] == [(m.step, m.value) for m in whole_history]  # epoch 3 once


def test_an_unreadable_latest_state_falls_back_to_the_one_before(tmp_path, npz_path, store_uri, monkeypatch):
    cfg, plan, first = _interrupted_comparison(tmp_path, npz_path, store_uri, monkeypatch, "resume-prev-state")
    (tmp_path / "out" / "state" / first["parent_run_id"] / "ssgan-6-seed0.pt").write_bytes(b"not a state")

    resumed = run_comparison(cfg, plan, tmp_path / "out", resume=True, progress=False)
    assert resumed["complete"] and resumed["runs"][0]["run_id"] == first["runs"][0]["run_id"]
    tags = mlflow.MlflowClient().get_run(resumed["runs"][0]["run_id"]).data.tags
    assert tags["resumed_after_epoch"] == "1"  # the state before the latest (epoch 2's)


def test_an_unreadable_saved_state_is_dropped_and_the_run_starts_afresh(tmp_path, npz_path, store_uri, monkeypatch):
    cfg, plan, first = _interrupted_comparison(tmp_path, npz_path, store_uri, monkeypatch, "resume-bad-state")
    for name in ("ssgan-6-seed0.pt", "ssgan-6-seed0.prev.pt"):  # the latest state and the one before
        (tmp_path / "out" / "state" / first["parent_run_id"] / name).write_bytes(b"not a state")

    resumed = run_comparison(cfg, plan, tmp_path / "out", resume=True, progress=False)
    assert resumed["complete"] and resumed["runs"][0]["run_id"] != first["runs"][0]["run_id"]
    assert "resumed_after_epoch" not in mlflow.MlflowClient().get_run(resumed["runs"][0]["run_id"]).data.tags


def _ctrl_c_after_saving_epoch_2(save_state, stopped):
    """`save_state`, followed by a Ctrl-C the first time it saves epoch 2's state (whose path goes to `stopped`)."""
    def save_then_stop(path, state, *args, **kwargs):
        save_state(path, state, *args, **kwargs)
        if state["epoch"] == 2 and not stopped:
            stopped.append(path)
            raise KeyboardInterrupt

    return save_then_stop


def test_seeds_trained_at_once_resume_from_their_saved_state_in_their_own_runs(tmp_path, npz_path, store_uri,
                                                                              monkeypatch):
    import ssgan.tracking.run

    def cfg_in(experiment):
        return load_config(SMOKE, data_overrides(npz_path, experiment, store_uri)
                           + ["train.epochs=4", "train.state_every_s=0"])

    plan, stopped = Plan.parse("6", 2, "ssgan"), []
    with monkeypatch.context() as m:
        m.setattr(ssgan.tracking.run, "save_state", _ctrl_c_after_saving_epoch_2(ssgan.tracking.run.save_state, stopped))
        first = run_comparison(cfg_in("resume-seeds"), plan, tmp_path / "out", progress=False, seeds_at_once=True)
    assert [r["failure_reason"] for r in first["runs"]] == ["interrupted by the user"] * 2
    assert stopped == [tmp_path / "out" / "state" / first["parent_run_id"] / "ssgan-6-seeds0-1.pt"]

    resumed = run_comparison(cfg_in("resume-seeds"), plan, tmp_path / "out", resume=True, progress=False,
                             seeds_at_once=True)
    assert resumed["complete"] and [r["run_id"] for r in resumed["runs"]] == [r["run_id"] for r in first["runs"]]
    client = mlflow.MlflowClient()
    for row in resumed["runs"]:
        assert sorted(m.step for m in client.get_metric_history(row["run_id"], "lr")) == [1, 2, 3, 4]  # each once
        assert client.get_run(row["run_id"]).data.tags["resumed_after_epoch"] == "2"
    whole = run_comparison(cfg_in("resume-seeds-whole"), plan, tmp_path / "whole", progress=False, seeds_at_once=True)
    assert [r["test_accuracy"] for r in resumed["runs"]] == [r["test_accuracy"] for r in whole["runs"]]
    assert not (tmp_path / "out" / "state").exists()


def test_an_interrupted_ensemble_resumes_its_members_from_their_saved_state(tmp_path, npz_path, store_uri, monkeypatch):
    import ssgan.tracking.run

    def cfg_in(experiment):
        return load_config(SMOKE, data_overrides(npz_path, experiment, store_uri)
                           + ["train.epochs=4", "train.state_every_s=0"])

    plan, stopped = Plan.parse("6", 1, "ssgan_ensemble", members=2), []
    with monkeypatch.context() as m:
        m.setattr(ssgan.tracking.run, "save_state", _ctrl_c_after_saving_epoch_2(ssgan.tracking.run.save_state, stopped))
        first = run_comparison(cfg_in("resume-ensemble"), plan, tmp_path / "out", progress=False)
    assert first["runs"][0]["failure_reason"] == "interrupted by the user"
    assert stopped == [tmp_path / "out" / "state" / first["parent_run_id"] / "ssgan_ensemble-6-seed0.pt"]

    resumed = run_comparison(cfg_in("resume-ensemble"), plan, tmp_path / "out", resume=True, progress=False)
    assert resumed["complete"] and resumed["runs"][0]["run_id"] == first["runs"][0]["run_id"]
    run = mlflow.MlflowClient().get_run(resumed["runs"][0]["run_id"])
    assert run.data.tags["resumed_after_epoch"] == "2" and run.data.tags["outcome"] == "finished"
    whole = run_comparison(cfg_in("resume-ensemble-whole"), plan, tmp_path / "whole", progress=False)
    assert resumed["runs"][0]["test_accuracy"] == whole["runs"][0]["test_accuracy"]
    assert run.data.metrics["member1_test_accuracy"] == mlflow.MlflowClient().get_run(
        whole["runs"][0]["run_id"]).data.metrics["member1_test_accuracy"]
    assert not (tmp_path / "out" / "state").exists()


def test_a_comparison_runs_in_one_process_at_a_time(tmp_path, npz_path, store_uri):
    import os

    from ssgan.experiments.compare import fingerprint
    from ssgan.errors import SSGANError
    from ssgan.training.resume import exclusive

    cfg, plan = load_config(SMOKE, data_overrides(npz_path, "one-at-a-time", store_uri)), Plan.parse("6", 1, "ssgan")
    with exclusive(tmp_path / "out" / "state" / f"compare-{fingerprint(cfg, plan)}"):  # as a running comparison does
        with pytest.raises(SSGANError, match=f"comparison .* is in use by process {os.getpid()}"):
            run_comparison(cfg, plan, tmp_path / "out", resume=True, progress=False)
    assert mlflow.search_runs(experiment_names=["one-at-a-time"], output_format="list") == []  # nothing was opened
    assert run_comparison(cfg, plan, tmp_path / "out", progress=False)["complete"]
    assert not (tmp_path / "out" / "state").exists()
