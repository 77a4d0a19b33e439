"""What `ssgan train` does when its tracking server dies mid-run: the faults of docs/faults.md, tried for real.

    python bench/server_outage.py [--back-after 20]

Starts `mlflow server` (SQLite, in a temporary folder) and trains configs/digits-20.yaml against it twice,
killing the server (SIGKILL) once epoch 5 is logged:
1. "killed and back": the server is started again BACK_AFTER seconds after the kill;
2. "killed and not back": it stays down; after the run, `ssgan sync OUT` while it is down, then again once it
   is back.
Prints, for each, the exit status, the wall time, ssgan's warning lines, and what MLflow holds at the end
(the run's status, each metric's epochs once).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from slow_store import free_port  # noqa: E402


class Server:
    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.uri = f"http://127.0.0.1:{self.port}"

    def start(self) -> float:
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=2)
                return time.perf_counter() - started
            except OSError:
                time.sleep(0.3)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def train(server: Server, out: Path, back_after: float | None) -> None:
    cmd = [sys.executable, "-m", "ssgan", "train", "-c", str(ROOT / "configs/digits-20.yaml"), "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": server.uri}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    while not any(line.startswith("epoch 5/") for line in lines):
        time.sleep(0.05)
    server.kill()
    killed = time.perf_counter() - started
    print(f"  server killed {killed:.1f} s into the run (after epoch 5)")
    if back_after is not None:
        time.sleep(back_after)
        took = server.start()
        print(f"  server started again {back_after:.0f} s after the kill; it answered {took:.1f} s later")
    code = proc.wait()
    reader.join(5)
    print(f"  exit status {code} after {time.perf_counter() - started:.1f} s; stdout: {proc.stdout.read().strip()}")
    for line in lines:
        if not line.startswith("epoch ") and "labeled of" not in line:
            print("  |", line.rstrip())


def check(server: Server, out: Path) -> None:
    import json

    import mlflow

    summary = json.loads((out / "summary.json").read_text())
    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(summary["run_id"])
    steps = {k: [m.step for m in client.get_metric_history(run.info.run_id, k)] for k in ("loss_d", "lr")}
    once = all(sorted(v) == list(range(1, summary["epochs"] + 1)) for v in steps.values())
    print(f"  MLflow: run {run.info.status}; loss_d and lr hold epochs 1..{summary['epochs']} each once: {once}; "
          f"model {summary['model_uri']}; spool left: {(out / 'mlflow-spool').exists()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--back-after", type=float, default=20.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        server.start()
        try:
            print(f"1. killed and back after {args.back_after:.0f} s")
            train(server, Path(tmp) / "back", args.back_after)
            check(server, Path(tmp) / "back")
            print("2. killed and not back")
            train(server, Path(tmp) / "gone", None)
            sync = [sys.executable, "-m", "ssgan", "sync", str(Path(tmp) / "gone")]
            r = subprocess.run(sync, cwd=ROOT, capture_output=True, text=True)
            print(f"  ssgan sync while the server is down: exit {r.returncode}: {(r.stdout + r.stderr).strip()}")
            server.start()
            started = time.perf_counter()
            r = subprocess.run(sync, cwd=ROOT, capture_output=True, text=True)
            print(f"  ssgan sync once it is back: exit {r.returncode} in {time.perf_counter() - started:.1f} s: "
                  f"{(r.stdout + r.stderr).strip()}")
            check(server, Path(tmp) / "gone")
        finally:
            if server.proc.poll() is None:
                server.kill()


if __name__ == "__main__":
    main()
