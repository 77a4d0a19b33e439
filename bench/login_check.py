"""What logins add before training: the time of ssgan's checks before a run (the server answers, takes the
login, the user may record runs in the experiment) against a server with logins (`ssgan server --auth`) and
the same server without, interleaved in one process.

    .venv/bin/python bench/login_check.py [--repeats 20]

Starts both servers on free loopback ports (SQLite stores in a temporary folder) and stops them at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow

from ssgan.tracking.access import add_user, grant
from ssgan.tracking.store import check_reachable, fail_fast_on_http, find_or_create_experiment

ADMIN_PASSWORD, USER, PASSWORD, EXPERIMENT = "bench-admin-password", "bench", "bench-password-1", "bench"


def start(folder: Path, port: int, auth: bool) -> subprocess.Popen:
    folder.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "ssgan", "server", "--backend", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts", str(folder / "artifacts"), "--port", str(port), "--workers", "1",
                             "--auth" if auth else "--no-auth"], cwd=folder, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "SSGAN_SERVER_ADMIN_PASSWORD": ADMIN_PASSWORD})
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit(f"error: the server on port {port} did not start")
            time.sleep(0.5)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_user(user: str | None, password: str | None) -> None:
    for var, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def checks(uri: str) -> float:
    """Seconds of what `use_store` asks a server before a run."""
    start = time.perf_counter()
    identity = check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    find_or_create_experiment(uri, EXPERIMENT, identity)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    fail_fast_on_http()
    with tempfile.TemporaryDirectory() as tmp:
        ports = {"with logins": free_port(), "without": free_port()}
        servers = {name: start(Path(tmp) / name.replace(" ", "-"), port, name == "with logins")
                   for name, port in ports.items()}
        try:
            uris = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
            as_user("admin", ADMIN_PASSWORD)
            add_user(uris["with logins"], USER, PASSWORD)
            for name, uri in uris.items():
                mlflow.set_tracking_uri(uri)
                find_or_create_experiment(uri, EXPERIMENT)
            grant(uris["with logins"], USER, "experiment",
                  mlflow.MlflowClient(uris["with logins"]).get_experiment_by_name(EXPERIMENT).experiment_id, "EDIT")
            as_user(USER, PASSWORD)
            times: dict[str, list[float]] = {name: [] for name in uris}
            for _ in range(args.repeats):  # interleaved: the machine's drift falls on both
                for name, uri in uris.items():
                    times[name].append(checks(uri))
        finally:
            for proc in servers.values():
                os.killpg(proc.pid, 15)
                proc.wait(timeout=30)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:12s} median {medians[name] * 1000:7.1f} ms  (min {min(t) * 1000:.1f}, max {max(t) * 1000:.1f}, "
              f"n={len(t)})")
    print(f"ratio with/without logins: {medians['with logins'] / medians['without']:.2f}")


if __name__ == "__main__":
    main()
