"""Training never waits on, nor dies with, its MLflow store: a write-ahead spool and a background sender.

Everything a training run records after its runs are created (params, tags, per-epoch metrics, sample grids,
the final evaluation, checkpoint, model, registration, summary, the run's end) is first appended to a
`Journal`: one JSON line per record in `mlflow-spool/<name>.jsonl` beside the training state (files it names
beside it). Appending is local and fast; the epoch loop never touches the network. A `Sender` thread sends the
records in order, each once: what it has sent is appended to `<name>.sent`, consecutive metric batches of a run
go as one request, consecutive files are uploaded in parallel. When the store does not answer it keeps the
records, retries with a growing pause and says so once; when the store is back it goes on where it stopped.

At the end of training `Sender.close(end_wait)` waits at most `tracking.end_wait` seconds. What is still
unsent stays in the spool, and `ssgan sync OUT` sends it later (`sync_folder`). A journal that is all sent is
deleted with its files.

Once each: records are sent strictly in order and marked sent after the store took them. A batch whose
request failed mid-way (the store went away while answering) may have landed: before sending it again the
run's metric history is checked, and MLflow's SQL stores ignore an identical metric (same key, step, value
and timestamp, which the journal keeps) in any case.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ssgan.tracking.store import fail_fast_on_http, is_outage, store_failure  # noqa: F401 -- fail_fast_on_http: for callers

log = logging.getLogger("ssgan")

SPOOL = "mlflow-spool"
MAX_PAUSE = 10.0  # seconds between tries while the store is away
BATCH_ITEMS = 900  # MLflow takes at most 1000 metrics, 100 params, 100 tags per batch
PARALLEL_UPLOADS = 8


class Outage(Exception):
    """The store did not answer (connection refused, a timeout, a 5xx): the records wait and are sent later."""


class Journal:
    """The write-ahead log of one training's records. `add` writes the record's files, then its line."""

    def __init__(self, folder: Path, uri: str, experiment_id: str):
        folder.mkdir(parents=True, exist_ok=True)
        name = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.path, self.files = folder / f"{name}.jsonl", folder / name
        self.seq, self.lock = 0, threading.Lock()
        self.added = threading.Condition(self.lock)
        with open(self.path, "w") as f:
            f.write(json.dumps({"uri": uri, "experiment_id": experiment_id}) + "\n")

    def add(self, op: str, run: str, files: Optional[dict[str, Callable[[Path], None]]] = None, **fields: Any) -> None:
        """Append record `op` for `run`; `files` maps a name to a function that writes that file (given its path),
        kept under the journal's folder for the sender."""
        with self.lock:
            self.seq += 1
            names = {}
            for name, write in (files or {}).items():
                path = self.files / str(self.seq) / name
                path.parent.mkdir(parents=True, exist_ok=True)
                write(path)
                names[name] = str(path.relative_to(self.path.parent))
            line = json.dumps({"seq": self.seq, "op": op, "run": run, **({"files": names} if names else {}), **fields})
            with open(self.path, "a") as f:
                f.write(line + "\n")
            self.added.notify_all()

    def batch(self, run: str, metrics: Optional[dict[str, float]] = None, step: int = 0,
              params: Optional[dict[str, str]] = None, tags: Optional[dict[str, str]] = None) -> None:
        now = int(time.time() * 1000)
        self.add("batch", run, metrics=[[k, float(v), now, step] for k, v in (metrics or {}).items()],
                 params=[[k, str(v)] for k, v in (params or {}).items()],
                 tags=[[k, str(v)] for k, v in (tags or {}).items()])


def entries(path: Path) -> Iterator[dict[str, Any]]:
    """A journal's records after its header (a line cut short by a crash is left out)."""
    with open(path) as f:
        f.readline()
        for line in f:
            if line.endswith("\n"):
                yield json.loads(line)


class Sender:
    """Sends one journal's records to its store in order; as a thread (`start`) while training runs, or at once
    (`send_all`, for `ssgan sync`)."""

    def __init__(self, path: Path, journal: Optional[Journal] = None):
        self.path, self.journal = path, journal
        self.sent_path = path.with_suffix(".sent")
        with open(path) as f:
            header = json.loads(f.readline())
        self.uri, self.experiment_id = header["uri"], header["experiment_id"]
        self.done, self.results = 0, {}  # seq sent up to; run -> what the store gave back (model uri, ...)
        if self.sent_path.exists():
            for line in self.sent_path.read_text().splitlines():
                mark = json.loads(line)
                self.done = max(self.done, mark["seq"])
                self.note(mark)
        self.offset = 0  # records already read
        self.uncertain = True  # the first record may have landed before a crash: check before a resend
        self.outage: Optional[str] = None
        self.stop, self.thread = threading.Event(), None
        self.idle = threading.Condition()

    def note(self, mark: dict[str, Any]) -> None:
        run = mark.get("run")
        if run is None:
            return
        r = self.results.setdefault(run, {"failed_uploads": []})
        for key in ("model_uri", "registered_model"):
            if key in mark:
                r[key] = mark[key]
        if "failed" in mark:
            r["failed_uploads"].append(mark["failed"])

    def mark(self, seqs: list[int], run: Optional[str] = None, **result: Any) -> None:
        marks = [{"seq": s} for s in seqs[:-1]] + [{"seq": seqs[-1], "run": run, **result}]
        with open(self.sent_path, "a") as f:
            f.write("".join(json.dumps(m) + "\n" for m in marks))
        self.note(marks[-1])
        self.done = seqs[-1]

    def unsent(self) -> list[dict[str, Any]]:
        return [e for e in entries(self.path) if e["seq"] > self.done]

    def pending(self) -> int:
        return len(self.unsent())

    # -- sending ---------------------------------------------------------------------------------------------
    def send_all(self) -> None:
        """Send every unsent record; raises Outage when the store does not answer (what was sent stays sent)."""
        while todo := self.unsent():
            for group in groups(todo):
                if self.stop.is_set():
                    return
                self.send(group)

    def send(self, group: list[dict[str, Any]]) -> None:
        import mlflow

        client = mlflow.MlflowClient(self.uri)
        first = group[0]
        try:
            if first["op"] == "batch":
                self.send_batch(client, group)
            elif first["op"] in ("file", "image"):
                self.send_files(client, group)
            else:
                self.send_one(client, first)
        except Exception as e:  # noqa: BLE001 -- what the store said; an outage waits, the rest is a warning
            if is_outage(e):
                self.uncertain = True
                raise Outage(store_failure(e)) from None
            raise
        self.uncertain = False

    def send_batch(self, client, group: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = group[0]["run"]
        metrics = [Metric(k, v, t, s) for e in group for k, v, t, s in e["metrics"]]
        params = {k: v for e in group for k, v in e["params"]}
        tags = {k: v for e in group for k, v in e["tags"]}
        if metrics and self.uncertain and landed(client, run, metrics):
            metrics = []  # the request that failed had landed
        if not (metrics or params or tags):
            self.mark([e["seq"] for e in group], run)
            return
        try:
            client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                             tags=[RunTag(k, v) for k, v in tags.items()])
            self.mark([e["seq"] for e in group], run)
        except Exception as e:  # noqa: BLE001
            if is_outage(e):
                raise
            log.warning("could not record %d metric(s), %d tag(s) of run %s in MLflow (%s)", len(metrics), len(tags),
                        run, store_failure(e))
            self.mark([e["seq"] for e in group], run)

    def send_files(self, client, group: list[dict[str, Any]]) -> None:
        def upload(e: dict[str, Any]) -> Optional[BaseException]:
            try:
                local = self.path.parent / next(iter(e["files"].values()))
                if e["op"] == "image":
                    import numpy as np

                    client.log_image(e["run"], np.load(local), key=e["key"], step=e["step"])
                else:
                    client.log_artifact(e["run"], str(local), e.get("dir"))
                return None
            except Exception as err:  # noqa: BLE001
                return err

        with ThreadPoolExecutor(min(PARALLEL_UPLOADS, len(group))) as pool:
            errors = list(pool.map(upload, group))
        outage = next((err for err in errors if err is not None and is_outage(err)), None)
        for e, err in zip(group, errors):
            if err is not None and is_outage(err):
                break  # marked in order up to the first outage; the rest is sent again (an upload overwrites)
            if err is None:
                self.mark([e["seq"]], e["run"])
            else:
                log.warning("could not record %s in MLflow (%s); training goes on", e["what"], store_failure(err))
                self.mark([e["seq"]], e["run"], failed=e["what"])
        if outage is not None:
            raise outage

    def send_one(self, client, e: dict[str, Any]) -> None:
        run, op = e["run"], e["op"]
        try:
            if op == "model":
                self.send_model(e)
            elif op == "register":
                self.send_registration(e)
            elif op == "summary":
                self.send_summary(client, e)
            elif op == "end":
                client.set_terminated(run, e["status"])
                self.mark([e["seq"]], run)
            else:
                raise ValueError(f"unknown record {op!r} in {self.path}")
        except Exception as err:  # noqa: BLE001
            if is_outage(err):
                raise
            what = e.get("what", f"the run's {op}")
            log.warning("could not record %s in MLflow (%s)", what, store_failure(err))
            self.mark([e["seq"]], run, failed=what)

    def send_model(self, e: dict[str, Any]) -> None:
        import torch

        from ssgan.serving.pyfunc import log_pyfunc

        files = {k: self.path.parent / v for k, v in e["files"].items()}
        state = torch.load(files["checkpoint.pt"], map_location="cpu", weights_only=False)
        example = torch.load(files["example.pt"], map_location="cpu")
        retire = e["retire"] or self.uncertain  # a resumed run's earlier model, or one this record began
        self.mark([e["seq"]], e["run"], model_uri=log_pyfunc(state, example, e["run"], self.experiment_id, e["params"],
                                                             retire))

    def send_registration(self, e: dict[str, Any]) -> None:
        from ssgan.serving.pyfunc import register

        model_uri = self.results.get(e["run"], {}).get("model_uri")
        if not model_uri:
            log.warning("model not registered as %r: its upload failed", e["name"])
            self.mark([e["seq"]], e["run"])
            return
        self.mark([e["seq"]], e["run"], registered_model=register(model_uri, e["name"], e["alias"]))

    def send_summary(self, client, e: dict[str, Any]) -> None:
        summary = self.completed(json.loads((self.path.parent / e["files"]["summary.json"]).read_text()), e["run"])
        client.log_text(e["run"], json.dumps(summary, indent=2), "summary.json")
        self.mark([e["seq"]], e["run"])
        if e.get("local") and Path(e["local"]).exists():  # the copy in OUT, written when this was not sent yet
            summary.pop("not_in_mlflow", None)
            Path(e["local"]).write_text(json.dumps(summary, indent=2) + "\n")

    def completed(self, summary: dict[str, Any], run: str) -> dict[str, Any]:
        """`summary` with what the store gave back: the model's URI, the registered name, failed uploads."""
        r = self.results.get(run, {})
        return {**summary, "model_uri": r.get("model_uri"), "registered_model": r.get("registered_model"),
                "failed_uploads": list(r.get("failed_uploads", []))}

    # -- as a thread while training runs ----------------------------------------------------------------------
    def start(self) -> "Sender":
        self.thread = threading.Thread(target=self.run, name="ssgan-mlflow-sender", daemon=True)
        self.thread.start()
        return self

    def run(self) -> None:
        pause = 1.0
        while not self.stop.is_set():
            try:
                self.send_all()
                if self.outage is not None:
                    log.warning("the MLflow store answers again; the records kept meanwhile are sent")
                    self.outage, pause = None, 1.0
            except Outage as e:
                if self.outage is None:
                    log.warning("the MLflow store does not answer (%s); training goes on, its records are kept in %s "
                                "and sent when the store is back", e, self.path.parent)
                self.outage = str(e)
                self.stop.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)
                continue
            except Exception as e:  # noqa: BLE001 -- never the end of training: the records stay for `ssgan sync`
                log.warning("could not send records to MLflow (%s: %s); they stay in %s for `ssgan sync`",
                            type(e).__name__, e, self.path.parent)
                self.outage = str(e)
                self.stop.wait(MAX_PAUSE)
                continue
            with self.idle:
                self.idle.notify_all()
            assert self.journal is not None
            with self.journal.added:
                if self.journal.seq <= self.done and not self.stop.is_set():
                    self.journal.added.wait(1.0)

    def close(self, wait: float) -> int:
        """Wait at most `wait` seconds for every record to be sent; returns how many are left (kept in the spool
        for `ssgan sync`). The sender stops either way. Ctrl-C or SIGTERM cuts the wait short."""
        deadline = time.monotonic() + wait
        try:
            with self.idle:
                while self.journal.seq > self.done and time.monotonic() < deadline and self.thread.is_alive():
                    self.idle.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: training is done; what is not sent stays for `ssgan sync`
            log.warning("stopped waiting for the MLflow store")
        finally:
            self.stop.set()
            with self.journal.added:
                self.journal.added.notify_all()
        left = self.journal.seq - self.done
        if left == 0:
            remove_journal(self.path)
        return left


def groups(todo: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive records sent together: a run's metric/param/tag batches as one request, files in parallel."""
    group: list[dict[str, Any]] = []
    items = 0
    for e in todo:
        size = len(e.get("metrics", ())) + len(e.get("params", ())) + len(e.get("tags", ()))
        joins = group and (
            (e["op"] == "batch" and group[0]["op"] == "batch" and group[0]["run"] == e["run"]
             and items + size <= BATCH_ITEMS and not (e["params"] and any(g["params"] for g in group)))
            or (e["op"] in ("file", "image") and group[0]["op"] in ("file", "image") and len(group) < 4 * PARALLEL_UPLOADS))
        if group and not joins:
            yield group
            group, items = [], 0
        group.append(e)
        items += size
    if group:
        yield group


def landed(client, run: str, metrics: list) -> bool:
    """Whether a batch whose request failed reached the store: its first metric is in the run's history."""
    m = metrics[0]
    return any(h.step == m.step and h.timestamp == m.timestamp and h.value == m.value
               for h in client.get_metric_history(run, m.key))


def remove_journal(path: Path) -> None:
    import shutil

    shutil.rmtree(path.with_suffix(""), ignore_errors=True)
    path.with_suffix(".sent").unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()  # the spool folder, when it holds nothing else
    except OSError:
        pass


def journals(folder: Path) -> list[Path]:
    """The journals under `folder` (an OUT folder, a spool folder or one journal), oldest first."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(folder.rglob(f"{SPOOL}/*.jsonl"), key=lambda p: p.name) + \
        (sorted(folder.glob("*.jsonl")) if folder.name == SPOOL else [])


def unsent(folder: Path) -> int:
    """How many records the spools under `folder` hold that are not in MLflow yet."""
    return sum(Sender(p).pending() for p in journals(folder))


def sync_folder(folder: Path, uri: Optional[str] = None) -> tuple[int, int]:
    """Send the unsent records of every journal under `folder` (to its own store, or `uri`); returns (sent,
    journals). Raises Outage when a store does not answer: what was sent stays sent."""
    import mlflow

    sent = 0
    paths = journals(folder)
    for path in paths:
        sender = Sender(path)
        if uri:
            sender.uri = uri
        mlflow.set_tracking_uri(sender.uri)  # the model is logged through MLflow's current store
        before = sender.pending()
        try:
            sender.send_all()
        finally:
            sent += before - sender.pending()
        remove_journal(path)
    return sent, len(paths)
