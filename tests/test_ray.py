"""`ssgan compare --ray`: the comparison's runs as tasks of a real (local, 2-CPU) Ray instance, recording into a
real `mlflow server`; the report equals the sequential comparison's, run by run."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ssgan.cli import cli
from tests.test_server import server  # noqa: F401 -- the module's mlflow server fixture

ray = pytest.importorskip("ray", reason="Ray is the optional extra ssgan[ray] (make install installs it)")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/smoke.yaml")


def compare(uri: str, npz_path: Path, out: Path, experiment: str, *extra: str) -> subprocess.CompletedProcess:
    args = ["-q", "compare", "-c", SMOKE, "--labels", "6,9", "--seeds", "2", "--methods",
            "ssgan,supervised,label_spreading", "--set", "data.name=npz", "--set", f"data.path={npz_path}",
            "--set", f"tracking.experiment={experiment}", "--set", "tracking.sample_every=0", "--out", str(out), *extra]
    # one torch thread in both: a Ray task trains with --cpus-per-run threads (1), and the numbers match then
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
    return subprocess.run([sys.executable, "-m", "ssgan", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)


def by_run(summary: dict) -> dict:
    return {(r["method"], r["budget"], r["split_seed"]): (r["split_hash"], r["test_accuracy"], r["test_macro_f1"])
            for r in summary["runs"]}


def test_a_comparison_on_local_ray_equals_the_sequential_one(server, tmp_path, npz_path):  # noqa: F811
    sequential = compare(server["uri"], npz_path, tmp_path / "seq", "ray-seq")
    assert sequential.returncode == 0, sequential.stderr[-2000:]
    on_ray = compare(server["uri"], npz_path, tmp_path / "ray", "ray-ray", "--ray", "local")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    a = json.loads((tmp_path / "seq" / "summary.json").read_text())
    b = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert len(by_run(b)) == 12 and b["complete"]  # 2 budgets x 2 seeds x 3 methods, each once
    assert by_run(a) == by_run(b)  # the same splits and the same numbers, run by run
    assert "(ssgan, 9 labels, seed 1 pid=" in on_ray.stderr  # a task's log lines reach the driver, named by run


def test_a_sqlite_store_with_a_ray_cluster_is_one_line_before_anything_is_submitted(tmp_path, npz_path):
    result = CliRunner().invoke(cli, ["compare", "-c", SMOKE, "--labels", "6", "--seeds", "1", "--ray", "auto",
                                      "--set", "data.name=npz", "--set", f"data.path={npz_path}",
                                      "--set", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.startswith("error: --ray auto: the MLflow store sqlite:///") and "Traceback" not in result.output
    assert not (tmp_path / "m.db").exists()  # nothing was opened


def test_ray_options_without_ray_are_an_error(tmp_path, npz_path):
    result = CliRunner().invoke(cli, ["compare", "-c", SMOKE, "--labels", "6", "--seeds", "1", "--gpus-per-run", "1",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "go with --ray ADDRESS" in result.output


def test_a_run_whose_worker_is_killed_is_retried_from_its_state_and_counted_once(server, tmp_path, npz_path):  # noqa: F811
    import signal
    import time

    import mlflow

    args = [sys.executable, "-m", "ssgan", "-q", "compare", "-c", SMOKE, "--labels", "6", "--seeds", "2", "--methods",
            "ssgan", "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "tracking.experiment=ray-kill",
            "--set", "tracking.sample_every=0", "--set", "train.epochs=400", "--set", "train.state_every_s=0",
            "--out", str(tmp_path / "out"), "--ray", "local"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": server["uri"], "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim, deadline = None, time.monotonic() + 300
    while victim is None:  # the worker training seed 0, once it has saved a training state
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        states = list((tmp_path / "out" / "state").rglob("ssgan-6-seed0.pt"))
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
        workers = [int(line.split()[0]) for line in ps if "ray::ssgan, 6 labels, seed 0" in line]
        if states and workers:
            victim = workers[0]
        time.sleep(0.2)
    os.kill(victim, signal.SIGKILL)  # the worker dies mid-run, as with a lost node
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] and sorted(r["split_seed"] for r in summary["runs"]) == [0, 1]  # each seed once
    client = mlflow.MlflowClient(server["uri"])
    seed0 = client.get_run(next(r["run_id"] for r in summary["runs"] if r["split_seed"] == 0))
    assert seed0.info.status == "FINISHED" and "resumed_after_epoch" in seed0.data.tags  # went on from its state
    children = client.search_runs([seed0.info.experiment_id], f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")
    assert len(children) == 2  # the retry recorded into the same run, not a new one


def test_ctrl_c_on_the_driver_cancels_the_tasks_and_resume_with_ray_finishes_them(server, tmp_path, npz_path):  # noqa: F811
    import signal
    import time

    args = [sys.executable, "-m", "ssgan", "-q", "compare", "-c", SMOKE, "--labels", "6", "--seeds", "2", "--methods",
            "ssgan,label_spreading", "--set", "data.name=npz", "--set", f"data.path={npz_path}",
            "--set", "tracking.experiment=ray-stop", "--set", "tracking.sample_every=0", "--set", "train.epochs=400",
            "--set", "train.state_every_s=0", "--out", str(tmp_path / "out"), "--ray", "local"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": server["uri"], "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list((tmp_path / "out" / "state").rglob("ssgan-6-seed*.pt")):  # training, with a state saved
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # as Ctrl-C
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    first = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert not first["complete"]
    again = subprocess.run(args + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["complete"] and summary["parent_run_id"] == first["parent_run_id"]
    assert sorted((r["method"], r["split_seed"]) for r in summary["runs"]) == [
        ("label_spreading", 0), ("label_spreading", 1), ("ssgan", 0), ("ssgan", 1)]


def test_an_ablation_on_local_ray_equals_the_sequential_one(server, tmp_path, npz_path):  # noqa: F811
    def ablate(out: Path, experiment: str, *extra: str) -> dict:
        args = [sys.executable, "-m", "ssgan", "-q", "ablate", "-c", SMOKE, "--tricks", "label_smoothing", "--seeds", "2",
                "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "data.labels=6",
                "--set", f"tracking.experiment={experiment}", "--set", "tracking.sample_every=0", "--out", str(out), *extra]
        env = {**os.environ, "MLFLOW_TRACKING_URI": server["uri"], "OMP_NUM_THREADS": "1"}
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((out / "ablation.json").read_text())

    a = ablate(tmp_path / "seq", "ablate-seq")
    b = ablate(tmp_path / "ray", "ablate-ray", "--ray", "local")
    accuracy = lambda s: {(r["variant"], r["seed"]): r["test_accuracy"] for r in s["runs"]}  # noqa: E731
    assert len(accuracy(b)) == 4 and accuracy(a) == accuracy(b) and b["complete"]
    import mlflow

    client = mlflow.MlflowClient(server["uri"])
    children = client.search_runs([client.get_experiment_by_name("ablate-ray").experiment_id],
                                  f"tags.mlflow.parentRunId = '{b['parent_run_id']}'")
    assert len(children) == 4 and sorted({r.data.tags["variant"] for r in children}) == sorted({r["variant"] for r in b["runs"]})
