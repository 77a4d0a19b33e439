"""Against a real MLflow tracking server over HTTP (SQLite backend, artifacts proxied by the server), as
`make server` starts it for a team; and a one-line error, before any training, when it cannot be reached."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from ssgan.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/smoke.yaml")
START_TIMEOUT = 120  # seconds; the server takes about 30 s to start on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_answers(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    """Poll `url` until it answers; fail with the end of the process's log if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[2:4]} exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"no answer from {url} within {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    """Stop a server started in its own process group: it and its workers, SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on a free loopback port; yields its URI and artifact folder; stopped at the end."""
    tmp = tmp_path_factory.mktemp("server")
    port, log = free_port(), tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
             "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)  # its own process group
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, uri + "/health", log, START_TIMEOUT)
        yield {"uri": uri, "artifacts": tmp / "artifacts"}
    finally:
        stop(proc)


def test_compare_and_report_through_a_tracking_server(server, tmp_path, npz_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])  # the only pointer to the store
    result = CliRunner().invoke(cli, [
        "-q", "compare", "-c", SMOKE, "--labels", "6", "--seeds", "1", "--methods", "ssgan,supervised,label_spreading",
        "--out", str(tmp_path / "out"), "--set", "data.name=npz", "--set", f"data.path={npz_path}",
        "--set", "tracking.experiment=served", "--set", "tracking.sample_every=0",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out/summary.json").read_text())

    client = mlflow.MlflowClient(tracking_uri=server["uri"])
    experiment = client.get_experiment_by_name("served")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # the server stores the artifacts
    children = client.search_runs([experiment.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary['parent_run_id']}'")
    assert len(children) == 3 and {r.data.tags["method"] for r in children} == {"ssgan", "supervised", "label_spreading"}
    for run in children:
        row = next(r for r in summary["runs"] if r["run_id"] == run.info.run_id)
        assert run.data.metrics["test_accuracy"] == row["test_accuracy"]
        assert run.data.tags["split_hash"] == row["split_hash"]
    page = Path(client.download_artifacts(summary["parent_run_id"], "report.html", str(tmp_path)))
    assert page.read_text() == (tmp_path / "out/report.html").read_text()
    assert list(server["artifacts"].rglob("report.html"))  # written through the server's proxy

    result = CliRunner().invoke(cli, ["-q", "report", "--experiment", "served", "--out", str(tmp_path / "rebuilt")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rebuilt/summary.json").read_text() == (tmp_path / "out/summary.json").read_text()


def test_an_unreachable_server_fails_before_training(tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for command in (["compare", "-c", SMOKE, "--labels", "20", "--seeds", "1", "--out", str(tmp_path / "out")],
                    ["report", "--experiment", "any", "--out", str(tmp_path / "out")]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: MLflow tracking server {uri} cannot be reached")
        assert not (tmp_path / "out").exists()


def test_users_commands_say_when_the_server_has_no_logins(server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    result = CliRunner().invoke(cli, ["users", "add", "alice", "--password", "alice-password-1"])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: cannot add user 'alice' on {server['uri']}: the server has no logins "
                                     "(start it with authentication: ssgan server --auth)")
