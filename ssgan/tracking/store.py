"""The MLflow store: where runs go.

Store: `tracking.uri`, else $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory
with artifacts in `mlartifacts/` beside the database file.
"""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Optional

from ssgan.config import Config
from ssgan.errors import SSGANError
from ssgan.tracking.access import Identity, check_can_register, check_can_write, check_server

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow 3's UI opens an experiment on its GenAI overview unless the experiment says it holds model training:
# this tag (what the UI's "experiment type" selector sets) makes it open on the runs table.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


def resolve_uri(configured: Optional[str]) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def artifact_root_for(uri: str) -> Optional[str]:
    """`sqlite:///path/mlflow.db` -> `file:///abs/path/mlartifacts`; None for stores that pick their own."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):]).resolve()
    return (db.parent / "mlartifacts").as_uri()


def check_reachable(uri: str) -> Identity:
    """Fail fast, before any training, when an HTTP tracking server does not answer or does not take this
    client's credentials; returns who it took the client for (nobody in particular for a local store)."""
    if not uri.startswith(("http://", "https://")):
        return Identity(uri)
    from mlflow.exceptions import MlflowException

    try:
        return check_server(uri)
    except MlflowException as e:
        reason = store_failure(e)
        if "TLS" in reason:  # it answers, but not as an https client expects
            raise SSGANError(f"MLflow tracking server {uri}: {reason}") from None
        raise unreachable(uri, reason) from None


def unreachable(uri: str, reason: str) -> SSGANError:
    return SSGANError(f"MLflow tracking server {uri} cannot be reached ({reason}); start it or fix tracking.uri")


def use_store(cfg: Config, register: Optional[str] = None) -> str:
    """Point MLflow at the configured store and experiment, after checking that this client may record runs
    there (and, with `register`, add versions to that registered model); returns the experiment id."""
    import mlflow

    uri = resolve_uri(cfg.tracking.uri)
    fail_fast_on_http()
    identity = check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):  # the first access creates and migrates a new store: one process at a time
        experiment_id = find_or_create_experiment(uri, cfg.tracking.experiment, identity)
    if register and identity.username is not None:
        check_can_register_to(identity, register)
    return experiment_id


def find_or_create_experiment(uri: str, name: str, identity: Optional[Identity] = None) -> str:
    """The id of experiment `name`, created (tagged as model training) when it does not exist yet; an existing
    one only when `identity` may record runs in it."""
    import mlflow

    try:
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            try:
                return mlflow.create_experiment(name, artifact_location=artifact_root_for(uri),
                                                tags={EXPERIMENT_KIND: MODEL_TRAINING})
            except mlflow.exceptions.MlflowException as e:
                # another process (on another machine: no lock covers a server) created it in between
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = mlflow.get_experiment_by_name(name)
                if experiment is None:
                    raise
        experiment_id = experiment.experiment_id
        if identity is not None:
            check_can_write(identity, experiment_id, name)
        if EXPERIMENT_KIND not in experiment.tags:  # a store made before the tag was set
            mlflow.MlflowClient().set_experiment_tag(experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return experiment_id
    except mlflow.exceptions.MlflowException as e:
        if is_outage(e):  # the first request to the store: say so before any training
            raise unreachable(uri, store_failure(e)) from None
        raise SSGANError(f"MLflow store {uri}: {str(e).splitlines()[0]}") from None


def check_can_register_to(identity: Identity, name: str) -> None:
    """One line when the tracking server will not let `identity` add a version to registered model `name` (or
    move its alias)."""
    import mlflow

    try:
        mlflow.MlflowClient().get_registered_model(name)
        exists = True
    except mlflow.exceptions.MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED"):
            raise SSGANError(f"MLflow store {identity.uri}: {str(e).splitlines()[0]}") from None
        exists = e.error_code == "PERMISSION_DENIED"  # there, and not to be read by this user
    check_can_register(identity, name, exists)


@contextlib.contextmanager
def store_lock(uri: str):
    """Hold an exclusive lock on a SQLite store's folder while a process first opens the store: MLflow creates
    the tables and runs the migrations of a new store file on first access, and two processes doing that at
    once fail ("table experiments already exists"), as do two creating the same experiment. The lock is the
    operating system's (flock on the folder itself: no lock file is left behind); other stores need none."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    folder = Path(uri[len("sqlite:///"):]).resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def store_failure(error: BaseException) -> str:
    """A failed store request in a few words: "the disk is full", or the first line of MLflow's message that
    says something (not SQLAlchemy's notes on autoflush, the SQL, its parameters or a link)."""
    text = " ".join(str(error).split())
    if "disk is full" in text or "No space left" in text:
        return "the disk is full"
    if getattr(error, "error_code", None) == "UNAUTHENTICATED":
        return "the server refused the login: check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    if getattr(error, "error_code", None) == "PERMISSION_DENIED":
        return "the server denied this user permission"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("its TLS certificate is not trusted: set MLFLOW_TRACKING_SERVER_CERT_PATH to the certificate of its "
                "authority, or MLFLOW_TRACKING_INSECURE_TLS=true to skip the check")
    if "SSLError" in text or "SSL:" in text:
        return "the TLS handshake failed: is it an https:// server, and is the address right?"
    for says, means in (("Connection refused", "connection refused"), ("timed out", "no answer in time"),
                        ("Name or service not known", "unknown host"), ("RemoteDisconnected", "connection dropped"),
                        ("Connection aborted", "connection dropped"), ("Connection reset", "connection dropped")):
        if says in text:
            return means
    if m := re.search(r"failed with error code (5\d\d)", text):
        return f"the server answered {m.group(1)}"
    lines = [ln.strip() for ln in str(error).splitlines()
             if ln.strip() and not ln.strip().startswith(("[", "(Background", "(raised as a result"))]
    return (lines or [type(error).__name__])[0][:200]


ACCESS_REFUSED = ("UNAUTHENTICATED", "PERMISSION_DENIED")  # MLflow's error codes for HTTP 401 and 403


def is_outage(e: BaseException) -> bool:
    """Whether a failed request means the store is away (try again later) rather than that it refused this
    record (a warning; the record is not sent again)."""
    import requests
    from mlflow.exceptions import MlflowException, RestException

    if getattr(e, "error_code", None) in ACCESS_REFUSED:  # a password or permission changed mid-run: the
        return True  # records are sound, and `ssgan sync` sends them once the login works again
    if isinstance(e, RestException):
        return e.get_http_status_code() >= 500
    if isinstance(e, requests.exceptions.HTTPError):
        return e.response is None or e.response.status_code >= 500
    if isinstance(e, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError, TimeoutError)):
        return True
    if "database is locked" in str(e):  # SQLite busy with another writer: a moment later it is not
        return True
    if isinstance(e, MlflowException):
        text = str(e)
        return ("API request to" in text and ("failed with exception" in text or "failed with error code 5" in text)) \
            or "Max retries exceeded" in text or "Connection refused" in text
    return False


def fail_fast_on_http() -> None:
    """MLflow retries a failed HTTP request up to 7 times with growing pauses (minutes); the sender retries on
    its own, so one try each unless the user set otherwise. Also: connections enough for parallel uploads, and
    no run address printed on stdout."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    os.environ.setdefault("MLFLOW_HTTP_POOL_MAXSIZE", "40")  # a model's files are uploaded on parallel connections
    # ending a run would look the run up again to print its address on stdout (where ssgan prints its results)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
