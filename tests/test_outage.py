"""Training neither waits on nor dies with its tracking server: a real `mlflow server`, killed in the middle of a
run and started again on the same port and database. Records wait in OUT/mlflow-spool and reach MLflow when it
is back, in order and each once; at the end a bounded wait, then exit status 4 and one line that says how to
send the rest (`ssgan sync OUT`); SIGTERM cuts that wait short."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from bench.slow_store import delaying_proxy
from tests.test_server import START_TIMEOUT, free_port, wait_until_answers

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 200  # about 5 s of training on 2 cores: the server dies while it runs


class Server:
    """`mlflow server` on a fixed port and SQLite file, so that it can be killed and started again as itself."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc, self.starts = folder, free_port(), None, 0
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        log = self.folder / f"server-{self.starts}.log"
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                 "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True)
        wait_until_answers(self.proc, self.uri + "/health", log, START_TIMEOUT)

    def kill(self) -> None:
        """As a crash or a lost machine: SIGKILL, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the module (a start takes 20-30 s on 2 busy cores); a test that kills it starts it again."""
    s = Server(tmp_path_factory.mktemp("outage-server"))
    s.start()
    yield s
    s.kill()


@pytest.fixture
def up(server):
    """The module's server, started again if a failed test left it dead."""
    if server.proc.poll() is not None:
        server.start()
    return server


class Training:
    """`ssgan train` in its own process, its stderr read line by line as it comes."""

    def __init__(self, uri: str, out: Path, npz_path: Path, end_wait: float):
        args = ["train", "-c", str(ROOT / "configs/smoke.yaml"), "--set", "data.name=npz", "--set", f"data.path={npz_path}",
                "--set", "data.labels=6", "--set", f"train.epochs={EPOCHS}", "--set", "tracking.sample_every=20",
                "--set", f"tracking.end_wait={end_wait}", "--set", "tracking.experiment=outage", "--out", str(out)]
        self.proc = subprocess.Popen([sys.executable, "-m", "ssgan", *args], cwd=ROOT, text=True,
                                     env={**os.environ, "MLFLOW_TRACKING_URI": uri},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")), daemon=True).start()

    def wait_for(self, text: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None or any(text in line for line in self.lines), self.output()
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output()}"
            time.sleep(0.05)

    def output(self) -> str:
        return "".join(self.lines)[-4000:]


def recorded(uri: str, run_id: str) -> tuple[str, dict[str, list[int]]]:
    """The run's status and, per metric, the steps of its history (a step twice is a duplicate)."""
    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    return run.info.status, {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in run.data.metrics}


def test_a_server_killed_mid_run_and_back_gets_every_record_once(up, tmp_path, npz_path):
    server = up
    training = Training(server.uri, tmp_path / "out", npz_path, end_wait=300)
    training.wait_for("epoch 2/")
    server.kill()  # mid-run: training goes on
    training.wait_for("does not answer")
    server.start()  # back (on 2 busy cores about 20-30 s later); the records kept meanwhile go now
    assert training.proc.wait(timeout=400) == 0, training.output()

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["epochs_completed"] == EPOCHS and summary["model_uri"] and "not_in_mlflow" not in summary
    status, steps = recorded(server.uri, summary["run_id"])
    assert status == "FINISHED"
    assert steps["loss_d"] == list(range(1, EPOCHS + 1))  # every epoch, each once
    assert steps["test_accuracy"] == list(range(1, EPOCHS + 1)) + [EPOCHS]  # + the final evaluation's
    assert not (tmp_path / "out" / "mlflow-spool").exists()  # all sent: nothing kept
    said = [line for line in training.lines if "does not answer" in line or "test accuracy" in line]
    assert "does not answer" in said[0], said  # the outage began while training ran, and training went on
    assert any("answers again" in line for line in training.lines)
    assert "Traceback" not in training.output()


def test_a_server_that_stays_away_ends_the_run_locally_and_ssgan_sync_sends_the_rest(up, tmp_path, npz_path):
    server = up
    out = tmp_path / "out"
    training = Training(server.uri, out, npz_path, end_wait=600)
    training.wait_for("epoch 2/")
    server.kill()  # and not back
    training.wait_for("test accuracy")  # trained; now in the end wait (up to 600 s)
    time.sleep(1)
    sent_at = time.monotonic()
    training.proc.send_signal(signal.SIGTERM)  # a scheduler's stop: the wait ends at once
    code = training.proc.wait(timeout=60)
    assert time.monotonic() - sent_at < 15
    assert code == 4, training.output()
    last = [line for line in training.lines if "not in MLflow" in line]
    assert len(last) == 1 and last[0].rstrip().endswith(f"send them with: ssgan sync {out}"), training.output()
    assert "Traceback" not in training.output()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] > 0 and summary["not_in_mlflow"]["records"] > 0 and summary["model_uri"] is None
    spooled = list((out / "mlflow-spool").rglob("checkpoint.pt"))
    assert spooled  # the trained model is on disk

    sync = [sys.executable, "-m", "ssgan", "sync", str(out)]
    away = subprocess.run(sync, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert away.returncode == 4 and away.stderr.startswith("error: the MLflow store does not answer"), away.stderr
    assert "Traceback" not in away.stderr

    server.start()
    back = subprocess.run(sync, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert back.returncode == 0, back.stderr
    assert "record(s) of 1 training(s) sent to MLflow" in back.stdout
    status, steps = recorded(server.uri, summary["run_id"])
    assert status == "FINISHED"
    assert steps["loss_d"] == list(range(1, EPOCHS + 1))
    summary = json.loads((out / "summary.json").read_text())  # brought up to date by the sync
    assert summary["model_uri"] and "not_in_mlflow" not in summary
    mlflow.set_tracking_uri(server.uri)
    assert mlflow.pyfunc.load_model(summary["model_uri"]).metadata.metadata["class_names"]
    assert not (out / "mlflow-spool").exists()
    again = subprocess.run(sync, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.startswith("nothing to send")


def test_sigterm_while_the_store_hangs_ends_the_wait_at_once(up, tmp_path, npz_path):
    server = up
    hang = threading.Event()
    proxy = delaying_proxy(server.port, hang=hang)
    try:
        out = tmp_path / "out"
        training = Training(f"http://127.0.0.1:{proxy.server_address[1]}", out, npz_path, end_wait=600)
        training.wait_for("epoch 2/")
        hang.set()  # requests now wait for an answer that does not come (MLflow's timeout is 60 s)
        training.wait_for("test accuracy")
        time.sleep(2)
        sent_at = time.monotonic()
        training.proc.send_signal(signal.SIGTERM)
        code = training.proc.wait(timeout=60)
        assert time.monotonic() - sent_at < 15, training.output()  # not MLflow's timeout, not the end wait
        assert code == 4, training.output()
        assert any(f"send them with: ssgan sync {out}" in line for line in training.lines), training.output()
        assert json.loads((out / "summary.json").read_text())["not_in_mlflow"]["records"] > 0
    finally:
        hang.clear()
        proxy.shutdown()
