"""The MLflow store under load: several processes that start at once on a store that does not exist yet."""
import subprocess
import sys
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]


def test_four_processes_at_once_on_a_new_sqlite_store_all_record_their_runs(tmp_path, npz_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"  # neither the folder nor the file exists yet
    args = ["-q", "train", "-c", str(ROOT / "configs/smoke.yaml"), "--set", "data.name=npz",
            "--set", f"data.path={npz_path}", "--set", "data.labels=6", "--set", f"tracking.uri={uri}",
            "--set", "train.epochs=1", "--set", "tracking.log_model=false", "--set", "tracking.experiment=at-once"]
    procs = [subprocess.Popen([sys.executable, "-m", "ssgan", *args, "--set", f"data.split_seed={i}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in results), [err[-500:] for code, err in results if code]
    runs = mlflow.MlflowClient(uri).search_runs([mlflow.MlflowClient(uri).get_experiment_by_name("at-once").experiment_id])
    assert sorted(r.data.tags["split_seed"] for r in runs) == ["0", "1", "2", "3"]
    assert [p.name for p in (tmp_path / "fresh").iterdir() if p.suffix == ".lock"] == []  # no lock file left


def test_an_experiment_another_process_creates_between_lookup_and_create_is_used(tmp_path, monkeypatch):
    """On a tracking server no file lock spans the machines: two processes may both see no experiment and both
    create it. The second one's create fails with RESOURCE_ALREADY_EXISTS; it then uses the winner's."""
    from ssgan.tracking.store import find_or_create_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    winner = mlflow.MlflowClient(uri).create_experiment("team")  # the other process got there first
    lookups = []
    real_lookup = mlflow.get_experiment_by_name

    def lookup_before_the_other_process_created_it(name):
        lookups.append(name)
        return None if len(lookups) == 1 else real_lookup(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", lookup_before_the_other_process_created_it)
    assert find_or_create_experiment(uri, "team") == winner
    assert lookups == ["team", "team"]
