"""Training time against a slow tracking server, as a ratio to a local store, measured in one run.

    python bench/slow_store.py --delay 2 --epochs 60 --out bench/results/slow-store

Starts `mlflow server` (SQLite backend, in a temporary folder) and, in front of it, a proxy that holds every
response for DELAY seconds (a server far away, or busy); then trains configs/digits-20.yaml for EPOCHS epochs
twice: with MLFLOW_TRACKING_URI pointing at the proxy, and on a local SQLite store. Reports both wall times
(the whole `ssgan train` command, until every record is in the store) and the epoch loop's, their ratios and the
requests made, and writes OUT/slow_store.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def delaying_proxy(upstream: int, delay: float = 0.0, seen: Optional[Counter] = None,
                   hang: Optional[threading.Event] = None) -> ThreadingHTTPServer:
    """An HTTP proxy on a free loopback port that forwards each request to 127.0.0.1:UPSTREAM and holds the
    response for `delay` seconds; `seen` counts the requests by method and path. While `hang` is set, requests
    are taken and left unanswered (a store behind a dead network path: no refusal, only silence)."""

    class Handler(BaseHTTPRequestHandler):
        def forward(self) -> None:
            path = self.path.split("?")[0]
            if seen is not None:
                seen[f"{self.command} {path if 'mlflow-artifacts' not in path else path.split('/artifacts/')[0] + '/artifacts/...'}"] += 1
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            while hang is not None and hang.is_set():
                time.sleep(0.5)
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=300)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            time.sleep(delay)
            self.send_response(response.status)
            for k, v in response.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = forward

        def log_message(self, *args) -> None:
            pass

    class Proxy(ThreadingHTTPServer):
        daemon_threads = True  # requests held by `hang` do not keep the process

        def handle_error(self, request, client_address) -> None:  # a client that gave up: nothing to say
            pass

    server = Proxy(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def train(uri: str, epochs: int, out: Path) -> tuple[float, dict]:
    """`ssgan train` of digits-20 against `uri`: the command's wall time (until every record is in MLflow) and
    its summary (the epoch loop's own time in `wall_clock_seconds`)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "from ssgan.cli import main; main()", "-q", "train", "-c",
                    str(ROOT / "configs/digits-20.yaml"), "--set", f"train.epochs={epochs}",
                    "--set", "train.state_every_s=3600", "--set", "tracking.end_wait=600", "--out", str(out)],
                   cwd=ROOT, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    assert "not_in_mlflow" not in summary and summary["model_uri"], summary  # all of it reached the store
    return seconds, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=2.0, help="seconds each response is held")
    ap.add_argument("--epochs", type=int, default=60, help="configs/digits-20.yaml trains 60")
    ap.add_argument("--out", default="bench/results/slow-store")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                   f"sqlite:///{tmp}/mlflow.db", "--artifacts-destination", f"{tmp}/artifacts",
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            seen: Counter = Counter()
            proxy = delaying_proxy(port, args.delay, seen)
            slow, slow_summary = train(f"http://127.0.0.1:{proxy.server_address[1]}", args.epochs, Path(tmp) / "slow")
            local, local_summary = train(f"sqlite:///{tmp}/local.db", args.epochs, Path(tmp) / "local")
            proxy.shutdown()
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    loop_slow, loop_local = slow_summary["wall_clock_seconds"], local_summary["wall_clock_seconds"]
    result = {"delay_s": args.delay, "epochs": args.epochs, "slow_server_s": round(slow, 1),
              "local_store_s": round(local, 1), "ratio": round(slow / local, 2),
              "training_loop_slow_s": loop_slow, "training_loop_local_s": loop_local,
              "training_loop_ratio": round(loop_slow / loop_local, 2), "requests": sum(seen.values()),
              "requests_by_path": dict(seen.most_common())}
    (out / "slow_store.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"digits-20, {args.epochs} epochs, the whole command until all is in MLflow: {slow:.1f} s with a server "
          f"answering in {args.delay:g} s, {local:.1f} s on a local store: {slow / local:.2f}x; the epoch loop: "
          f"{loop_slow:.1f} s vs {loop_local:.1f} s: {loop_slow / loop_local:.2f}x; {sum(seen.values())} requests",
          flush=True)


if __name__ == "__main__":
    main()
