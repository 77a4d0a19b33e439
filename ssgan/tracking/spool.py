"""Training never waits on, nor dies with, its MLflow store: a write-ahead spool and a background sender.

Everything a training run records after its runs are created (params, tags, per-epoch metrics, sample grids,
the final evaluation, checkpoint, model, registration, summary, the run's end) is first appended to a
`Journal`: one JSON line per record in `mlflow-spool/<name>.jsonl` beside the training state (the files it
names beside it). Appending is local and fast; the epoch loop never touches the network. A `Sender` thread
sends the records: to a far store on parallel connections as soon as they are written (a run's metric
batches coalesced into one request, files and the model alongside), records that need what came before them
(a registration, the summary, a run's end) after it. What the store took is appended to `<name>.sent`. When
the store does not answer the sender keeps the records, retries with a growing pause and says so once; when
the store is back it goes on where it stopped.

At the end of training `Sender.close(end_wait)` waits at most `tracking.end_wait` seconds. What is still
unsent stays in the spool, and `ssgan sync OUT` sends it later (`sync_folder`). A journal that is all sent is
deleted with its files.

Once each: a record is marked sent after the store took it and never sent again. A request that failed
mid-way (the store went away while answering, or the process died) may have landed: before its metrics are
sent again the run's metric history is checked, and MLflow's SQL stores ignore an identical metric (same
key, step, value and timestamp, which the journal keeps) in any case. Files are overwritten, tags set again.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import threading
import time
import uuid
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ssgan.tracking.store import fail_fast_on_http, is_outage, store_failure  # noqa: F401 -- fail_fast_on_http: for callers

log = logging.getLogger("ssgan")

SPOOL = "mlflow-spool"
MAX_PAUSE = 10.0  # seconds between tries while the store is away
BATCH_ITEMS = 900  # MLflow takes at most 1000 metrics, 100 params, 100 tags per batch
PARALLEL_UPLOADS = 8  # requests in flight at once
MODEL_UPLOADS = 40  # a model is some 35 small files and its checkpoint: one wave


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

    def add(self, op: str, run: str, files: Optional[dict[str, Callable[[Path], None]]] = None,
            **fields: Any) -> dict[str, str]:
        """Append record `op` for `run`; `files` maps a name to a function that writes that file (given its path),
        kept under the journal's folder for the sender. Returns where each file is (relative to the folder),
        for a later record that reads the same file."""
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
        return names

    def batch(self, run: str, metrics: Optional[dict[str, float]] = None, step: int = 0,
              params: Optional[dict[str, str]] = None, tags: Optional[dict[str, str]] = None) -> None:
        now = int(time.time() * 1000)
        self.add("batch", run, metrics=[[k, float(v), now, step] for k, v in (metrics or {}).items()],
                 params=[[k, str(v)] for k, v in (params or {}).items()],
                 tags=[[k, str(v)] for k, v in (tags or {}).items()])


class Sender:
    """Sends one journal's records to its store; as a thread (`start`) while training runs, or at once
    (`send_all`, for `ssgan sync`).

    The records between two barriers (a registration, a summary, a run's end: they need what came before) go
    at once, on parallel connections: a run's metric batches as one request (their steps and timestamps are in
    the records, so the order of arrival does not matter), each file and the model on its own."""

    BARRIERS = ("register", "summary", "end")

    def __init__(self, path: Path, journal: Optional[Journal] = None):
        self.path, self.journal = path, journal
        self.sent_path = path.with_suffix(".sent")
        with open(path) as f:
            first = f.readline()
        header = json.loads(first)
        self.uri, self.experiment_id = header["uri"], header["experiment_id"]
        self.offset = len(first.encode())  # how far the journal is read
        self.waiting: dict[int, dict[str, Any]] = {}  # read, not sent yet: seq -> record
        self.sent: set[int] = set()
        self.results: dict[str, dict[str, Any]] = {}  # run -> what the store gave back (model uri, ...)
        self.lock = threading.Lock()
        if self.sent_path.exists():
            for line in self.sent_path.read_text().splitlines():
                if line.endswith("}"):  # a line cut short by a crash: that record is sent again
                    self.note(json.loads(line))
        # records whose request may have landed without being marked sent (it failed, or a process died while
        # it was in flight): checked before they are sent again. A journal opened again (`ssgan sync`, or
        # what an earlier part left): all of its unsent records.
        self.tried: set[int] = set()
        self.all_tried = journal is None
        self.outage: Optional[str] = None
        self.stop, self.thread = threading.Event(), None
        self.idle = threading.Condition()
        self.pool = shared_pool("ssgan-mlflow-request", PARALLEL_UPLOADS)
        self.uploads = shared_pool("ssgan-mlflow-upload", MODEL_UPLOADS)  # a model's files

    def note(self, mark: dict[str, Any]) -> None:
        self.sent.update(mark["seqs"])
        run = mark.get("run")
        if run is None:
            return
        r = self.results.setdefault(run, {"failed_uploads": []})
        for key in ("model_uri", "registered_model", "model_id", "model_location"):
            if key in mark:
                r[key] = mark[key]
        if "failed" in mark:
            r["failed_uploads"].append(mark["failed"])

    def mark(self, seqs: list[int], run: Optional[str] = None, **result: Any) -> None:
        """Records `seqs` are in the store (or refused by it, `failed`): never sent again."""
        mark = {"seqs": seqs, "run": run, **result}
        with self.lock:
            with open(self.sent_path, "a") as f:
                f.write(json.dumps(mark) + "\n")
            self.note(mark)

    def unsent(self) -> list[dict[str, Any]]:
        """The records not sent yet, in order; the journal is read on from where the last call stopped."""
        with open(self.path) as f:
            f.seek(self.offset)
            while (line := f.readline()).endswith("\n"):  # a line still being written (or cut short) waits
                self.offset += len(line.encode())
                e = json.loads(line)
                self.waiting[e["seq"]] = e
        for seq in [seq for seq in self.waiting if seq in self.sent]:
            del self.waiting[seq]
        return list(self.waiting.values())

    def pending(self) -> int:
        return len(self.unsent())

    def left(self) -> int:
        """Records of the live journal not sent yet."""
        return self.journal.seq - len(self.sent)

    # -- sending ---------------------------------------------------------------------------------------------
    def send_all(self) -> None:
        """Send every unsent record; raises Outage when the store does not answer (what was sent stays sent).

        To a far store (HTTP) the records go on parallel connections as soon as they are written: at most one
        metric batch per run in flight (the next takes all that came meanwhile), files and the model alongside;
        a barrier waits for everything before it and goes alone. To a local store, one after the other."""
        import mlflow

        client = mlflow.MlflowClient(self.uri)
        far = self.uri.startswith(("http://", "https://"))
        flying: dict[Future, tuple[str, str, list[int]]] = {}  # request -> (op, run, records)
        while not self.stop.is_set():
            self.settle(flying, block=False)
            busy = {seq for _, _, seqs in flying.values() for seq in seqs}
            todo = [e for e in self.unsent() if e["seq"] not in busy]
            if not todo and not flying:
                return
            records = segment(todo, self.BARRIERS) if todo else []
            if records and records[0]["op"] in self.BARRIERS and flying:
                self.settle(flying, block=True, everything=True)  # a barrier comes after all before it
                continue
            after = [] if not records else follow(records, todo[len(records):])
            # one metric batch per run in flight (the next takes all written meanwhile), and one image: each
            # image also sets the run's tag that says it has images, and two at once collide on that tag
            serial = {(op, run) for op, run, _ in flying.values() if op in ("batch", "image")}
            now = []
            for e in records:
                if (e["op"], e["run"]) not in serial:
                    now.append(e)
                    if e["op"] == "image":
                        serial.add(("image", e["run"]))
            jobs = self.jobs(client, now, after)
            if not jobs:
                self.settle(flying, block=True)
                continue
            for op, run, seqs, job in jobs:
                job = functools.partial(timed, f"{op} ({len(seqs)} record(s))", job)
                if far and op not in self.BARRIERS:
                    flying[self.pool.submit(attempt, job)] = (op, run, seqs)
                else:
                    self.raise_outage(attempt(job), seqs)

    def jobs(self, client, records: list[dict[str, Any]], after: list[dict[str, Any]]):
        """(op, run, records, function) for each request `records` make: a run's batches as one (or a few),
        a model's upload followed by its run's registration and summary (`after`)."""
        out = [("batch", b[0]["run"], [e["seq"] for e in b], functools.partial(self.send_batch, client, b))
               for b in batches([e for e in records if e["op"] == "batch"])]
        for e in records:
            if e["op"] != "batch":
                then = [a for a in after if a["run"] == e["run"]] if e["op"] == "model" else []
                out.append((e["op"], e["run"], [e["seq"]] + [a["seq"] for a in then],
                            functools.partial(chain, [functools.partial(self.send_one, client, x) for x in [e, *then]])))
        return out

    def settle(self, flying: dict, block: bool, everything: bool = False) -> None:
        """Take in the requests in flight that are done (`block`: wait a moment for one, or for all); an
        outage among them is raised once all have ended."""
        if not flying:
            return
        if block:
            wait(list(flying), timeout=None if everything else 0.2,
                 return_when=ALL_COMPLETED if everything else FIRST_COMPLETED)
        done = {f: flying.pop(f) for f in [f for f in flying if f.done()]}
        if any(f.result() is not None and is_outage(f.result()) for f in done) and flying:
            wait(list(flying))  # let the others end: their records are marked sent, or sent again later
            done.update(flying)
            flying.clear()
        errors = [(f.result(), seqs) for f, (_, _, seqs) in done.items()]  # `attempt`: None, or the error
        for error, seqs in errors:
            if error is not None and is_outage(error):
                self.tried.update(seqs)
        for error, seqs in errors:
            self.raise_outage(error, seqs)

    def raise_outage(self, error: Optional[BaseException], seqs: list[int]) -> None:
        if error is None:
            return
        if is_outage(error):
            self.tried.update(seqs)
            raise Outage(store_failure(error)) from None
        raise error

    def uncertain(self, records: list[dict[str, Any]]) -> bool:
        return self.all_tried or any(e["seq"] in self.tried for e in records)

    def send_batch(self, client, group: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run = group[0]["run"]
        arrived = landed(client, run, [e for e in group if e["metrics"] and self.uncertain([e])])
        metrics = [Metric(k, v, t, s) for e in group if e["seq"] not in arrived for k, v, t, s in e["metrics"]]
        params = {k: v for e in group for k, v in e["params"]}
        tags = {k: v for e in group for k, v in e["tags"]}
        try:
            if metrics or params or tags:
                client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                                 tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as e:  # noqa: BLE001
            if is_outage(e):
                raise
            log.warning("could not record %d metric(s), %d tag(s) of run %s in MLflow (%s)", len(metrics), len(tags),
                        run, store_failure(e))
        self.mark([e["seq"] for e in group], run)

    def send_one(self, client, e: dict[str, Any]) -> None:
        run, op = e["run"], e["op"]
        try:
            if op == "image":
                import numpy as np

                client.log_image(run, np.load(self.file(e, "samples.npy")), key=e["key"], step=e["step"])
            elif op == "file":
                client.log_artifact(run, str(self.file(e)), e.get("dir"))
            elif op == "model_create":
                from ssgan.serving.pyfunc import create_model

                model_id, location = create_model(run, self.experiment_id, e["params"])
                self.mark([e["seq"]], run, model_id=model_id, model_location=location)
                return
            elif op == "model":
                self.send_model(e)
                return
            elif op == "register":
                self.send_registration(e)
                return
            elif op == "summary":
                self.send_summary(client, e)
                return
            elif op == "end":
                made = self.results.get(run, {})
                if made.get("model_id") and not made.get("model_uri"):  # made, never uploaded: failed
                    with contextlib.suppress(Exception):
                        client.finalize_logged_model(made["model_id"], "FAILED")
                client.set_terminated(run, e["status"])
            else:
                raise ValueError(f"unknown record {op!r} in {self.path}")
        except Exception as err:  # noqa: BLE001
            if is_outage(err):
                raise
            what = e.get("what", f"the run's {op}")
            log.warning("could not record %s in MLflow (%s)%s", what, store_failure(err),
                        "; training goes on" if self.thread is not None else "")
            self.mark([e["seq"]], run, failed=what)
            return
        self.mark([e["seq"]], run)

    def file(self, e: dict[str, Any], name: Optional[str] = None) -> Path:
        return self.path.parent / (e["files"][name] if name else next(iter(e["files"].values())))

    def send_model(self, e: dict[str, Any]) -> None:
        import torch

        from ssgan.serving.pyfunc import log_pyfunc

        state = torch.load(self.path.parent / e["checkpoint"], map_location="cpu", weights_only=False)
        example = torch.load(self.file(e, "example.pt"), map_location="cpu")
        retire = e["retire"] or self.uncertain([e])  # a resumed run's earlier model, or one this record began
        made = self.results.get(e["run"], {})
        model = (made["model_id"], made["model_location"]) if made.get("model_id") else None
        self.mark([e["seq"]], e["run"], model_uri=log_pyfunc(state, example, e["run"], self.experiment_id, e["params"],
                                                             retire, model, self.uploads.submit))

    def send_registration(self, e: dict[str, Any]) -> None:
        from ssgan.serving.pyfunc import register

        model_uri = self.results.get(e["run"], {}).get("model_uri")
        if not model_uri:
            log.warning("model not registered as %r: its upload failed", e["name"])
            self.mark([e["seq"]], e["run"])
            return
        self.mark([e["seq"]], e["run"], registered_model=register(model_uri, e["name"], e["alias"]))

    def send_summary(self, client, e: dict[str, Any]) -> None:
        summary = self.completed(json.loads(self.file(e, "summary.json").read_text()), e["run"])
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
                if self.left() <= 0 and not self.stop.is_set():
                    self.journal.added.wait(1.0)

    def close(self, wait: float) -> int:
        """Wait at most `wait` seconds for every record to be sent; returns how many are left (kept in the spool
        for `ssgan sync`). The sender stops either way. Ctrl-C or SIGTERM cuts the wait short."""
        deadline = time.monotonic() + wait
        try:
            with self.idle:
                while self.left() > 0 and time.monotonic() < deadline and self.thread.is_alive():
                    self.idle.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: training is done; what is not sent stays for `ssgan sync`
            log.warning("stopped waiting for the MLflow store")
        finally:
            self.stop.set()
            with self.journal.added:
                self.journal.added.notify_all()
        left = self.left()
        if left == 0:
            remove_journal(self.path)
        return left


def segment(todo: list[dict[str, Any]], barriers: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records to send at once: those before the first barrier, or the barrier alone when it comes first."""
    for n, e in enumerate(todo):
        if e["op"] in barriers:
            return todo[:n] or [e]
    return todo


def batches(records: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Metric/param/tag records as few requests as MLflow takes: per run, up to its limits per request."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for e in records:
        by_run.setdefault(e["run"], []).append(e)
    for group in by_run.values():
        chunk: list[dict[str, Any]] = []
        items = params = tags = 0
        for e in group:
            n_m, n_p, n_t = len(e["metrics"]), len(e["params"]), len(e["tags"])
            if chunk and (items + n_m + n_p + n_t > BATCH_ITEMS or params + n_p > 100 or tags + n_t > 100):
                yield chunk
                chunk, items, params, tags = [], 0, 0, 0
            chunk.append(e)
            items, params, tags = items + n_m + n_p + n_t, params + n_p, tags + n_t
        if chunk:
            yield chunk


def follow(records: list[dict[str, Any]], rest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The registrations and summaries right after `records` whose model `records` upload: they go with it."""
    models = {e["run"] for e in records if e["op"] == "model"}
    after = []
    for e in rest:
        if e["op"] not in ("register", "summary") or e["run"] not in models:
            break
        after.append(e)
    return after


class DaemonPool:
    """Worker threads that do not hold the process at its exit, as ThreadPoolExecutor's do (they are joined):
    a request to a store that hangs must not keep a stopped training alive."""

    def __init__(self, workers: int, name: str):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(workers):
            threading.Thread(target=self.work, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self.queue.put((future, fn, args))
        return future

    def work(self) -> None:
        while True:
            future, fn, args = self.queue.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 -- handed to whoever waits on the future
                    future.set_exception(e)


POOLS: dict[str, DaemonPool] = {}
POOLS_LOCK = threading.Lock()


def shared_pool(name: str, workers: int) -> DaemonPool:
    """One pool of each kind per process (the senders of a comparison's runs, one after another, share it)."""
    with POOLS_LOCK:
        if name not in POOLS:
            POOLS[name] = DaemonPool(workers, name)
    return POOLS[name]


def timed(what: str, job: Callable[[], None]) -> None:
    started = time.monotonic()
    try:
        job()
    finally:
        log.debug("sent %s in %.1f s", what, time.monotonic() - started)


def chain(jobs: list[Callable[[], None]]) -> None:
    for job in jobs:
        job()


def attempt(job: Callable[[], None]) -> Optional[BaseException]:
    try:
        job()
        return None
    except Exception as e:  # noqa: BLE001 -- handed back to the caller, which decides
        return e


def landed(client, run: str, records: list[dict[str, Any]]) -> set[int]:
    """Which of these records, sent before by a request that failed (or by a process that died), reached the
    store after all: those whose first metric is in the run's history (read once per metric name)."""
    histories: dict[str, set[tuple[int, int, float]]] = {}
    arrived = set()
    for e in records:
        key, value, timestamp, step = e["metrics"][0]
        if key not in histories:
            histories[key] = {(h.step, h.timestamp, h.value) for h in client.get_metric_history(run, key)}
        if (step, timestamp, float(value)) in histories[key]:
            arrived.add(e["seq"])
    return arrived


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
    """The journals under `folder` (an OUT folder, a spool folder or one journal), oldest first: the .jsonl
    files in folders named mlflow-spool (or mlflow-spool-<run>)."""
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted((p for p in folder.rglob("*.jsonl") if p.parent.name.startswith(SPOOL)), key=lambda p: p.name)


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
