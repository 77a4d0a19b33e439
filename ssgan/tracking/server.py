"""A team's MLflow tracking server (`ssgan server`, `make server`): MLflow's own `mlflow server`, with its
basic-auth app (users, passwords, per-experiment and per-model permissions) switched on whenever the server
listens beyond this machine.

What authentication needs is kept beside the backend store: the user store (`basic_auth.db` beside a SQLite
backend; the same database for PostgreSQL and other SQL backends), the auth app's config `basic_auth.ini` and
the Flask secret that signs its forms (`flask_secret`, readable by its owner only, made once and kept so that
a restart does not invalidate open pages). The admin user is `admin`; its password comes from
$SSGAN_SERVER_ADMIN_PASSWORD and nowhere else: no default password exists, and the server does not start
without it (nor with one that is not admin's in an existing user store).
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from ssgan.errors import SSGANError

ADMIN = "admin"
ADMIN_PASSWORD_VAR = "SSGAN_SERVER_ADMIN_PASSWORD"
MIN_PASSWORD = 12  # MLflow's own rule for every basic-auth password
PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS")
AUTH_CACHE_SECONDS = 60  # a checked password is trusted this long per worker: PBKDF2 on every request is slow


@dataclass
class ServerPlan:
    """What `serve` runs: the `mlflow server` command line and the environment it runs in."""
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    auth: bool = False
    auth_store: Optional[str] = None  # the user store's URI, with auth
    folder: Optional[Path] = None  # where basic_auth.ini and flask_secret are, with auth


def is_loopback(host: str) -> bool:
    """Whether `host` (an interface to listen on) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve to any interface
        return False


def plan_server(backend: str, artifacts: str, host: str, port: int, auth: Optional[bool] = None,
                default_permission: str = "READ", allowed_hosts: Optional[str] = None, workers: Optional[int] = None,
                environ: Optional[dict[str, str]] = None) -> ServerPlan:
    """The server's command and environment; with authentication (`auth`; None: on unless `host` is loopback),
    its files are written and the admin password is checked first. Raises SSGANError on anything a user fixes."""
    environ = dict(os.environ if environ is None else environ)
    auth = (not is_loopback(host)) if auth is None else auth
    if default_permission not in PERMISSIONS:
        raise SSGANError(f"--default-permission {default_permission!r}: use one of {', '.join(PERMISSIONS)}")
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
            "--artifacts-destination", artifacts, "--host", host, "--port", str(port)]
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    if workers:
        argv += ["--workers", str(workers)]
    # MLflow's job runner (GenAI evaluation jobs) starts extra consumer processes ssgan never uses
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")}
    if not auth:
        return ServerPlan(argv, env)
    password = admin_password(environ)
    folder = config_folder(backend)
    store = auth_store_uri(backend, folder)
    check_admin_password(store, password)
    ini = write_auth_config(folder, store, default_permission)
    env.update({"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
                "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or flask_secret(folder)})
    return ServerPlan(argv + ["--app-name", "basic-auth"], env, True, store, folder)


def admin_password(environ: dict[str, str]) -> str:
    password = environ.get(ADMIN_PASSWORD_VAR, "")
    if not password:
        raise SSGANError(f"a server that lets in only its users needs the admin password: set {ADMIN_PASSWORD_VAR} "
                         f"(at least {MIN_PASSWORD} characters), or listen on 127.0.0.1 only")
    check_password_length(password, ADMIN_PASSWORD_VAR)
    return password


def check_password_length(password: str, what: str) -> None:
    """MLflow's one rule for a basic-auth password, said before MLflow refuses it."""
    if len(password) < MIN_PASSWORD:
        raise SSGANError(f"{what} is {len(password)} characters long; MLflow needs at least {MIN_PASSWORD}: choose "
                         "a longer one")


def config_folder(backend: str) -> Path:
    """Where the auth files live: beside a SQLite backend file, else in the working directory."""
    if backend.startswith("sqlite:///"):
        return Path(backend[len("sqlite:///"):]).resolve().parent
    return Path.cwd()


def auth_store_uri(backend: str, folder: Path) -> str:
    """The user store: the backend's own database when it is a server database (PostgreSQL, MySQL, ...; the
    auth app keeps its tables and migrations apart), else `basic_auth.db` beside it."""
    scheme = urlsplit(backend).scheme
    if scheme and scheme != "sqlite" and scheme != "file" and len(scheme) > 1:  # len: a Windows drive letter
        return backend
    return f"sqlite:///{folder / 'basic_auth.db'}"


def redacted(uri: str) -> str:
    """`uri` as it may be shown: a password in it replaced by ***."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return uri.replace(f":{parts.password}@", ":***@", 1)


def check_admin_password(store: str, password: str) -> None:
    """An existing user store keeps its admin and ignores the configured password: make that visible here
    rather than as a login that fails later."""
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).exists():
        return  # a new store: MLflow creates admin with this password
    import warnings

    with warnings.catch_warnings():  # the server's modules warn about the server's own dependencies
        warnings.simplefilter("ignore")
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore  # the auth app: `mlflow[auth]`

    users = SqlAlchemyStore()
    try:
        users.init_db(store)
        wrong = users.has_user(ADMIN) and not users.authenticate_user(ADMIN, password)
    except Exception as e:  # the database is away or refuses the login
        raise SSGANError(f"the user store {redacted(store)} cannot be opened ({str(e).splitlines()[0][:200]}); "
                         "check the backend's address and credentials") from None
    if wrong:
        raise SSGANError(f"{ADMIN_PASSWORD_VAR} is not the password of user {ADMIN!r} in the user store "
                         f"{redacted(store)}; set it to admin's current password")


def write_auth_config(folder: Path, store: str, default_permission: str) -> Path:
    """basic_auth.ini: no password in it (the admin's comes from the environment)."""
    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "basic_auth.ini"
    ini.write_text("[mlflow]\n"
                   f"default_permission = {default_permission}\n"
                   f"database_uri = {store.replace('%', '%%')}\n"
                   f"admin_username = {ADMIN}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n")
    ini.chmod(0o600)  # it may name a database password (a PostgreSQL URI)
    return ini


def flask_secret(folder: Path) -> str:
    """The key that signs the auth app's forms: made once, owner-only, the same for every worker and restart."""
    path = folder / "flask_secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def serve(plan: ServerPlan) -> None:
    """Replace this process with the server (its signals and exit status are the server's)."""
    os.execve(plan.argv[0], plan.argv, {**os.environ, **plan.env})
