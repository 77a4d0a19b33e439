"""A team's tracking server lets in only the team: `ssgan server` with MLflow's basic-auth app, started for
real on loopback, and ssgan as its client (credentials from MLFLOW_TRACKING_USERNAME / _PASSWORD)."""
import base64
import contextlib
import json
import os
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
from click.testing import CliRunner

from ssgan.cli import cli
from ssgan.errors import SSGANError
from ssgan.tracking.server import auth_store_uri, plan_server, redacted
from tests.test_server import START_TIMEOUT, free_port, stop, wait_until_answers

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/smoke.yaml")
ADMIN_PASSWORD = "admin-password-for-tests"
USERS = {"trainer": "trainer-password-1", "reader": "reader-password-1"}
EXPERIMENT, MODEL = "team", "team-model"


def as_user(monkeypatch, server, user, password):
    """ssgan's commands in this test talk to `server` as `user` (None: no such variable)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["uri"])
    for var, value in (("MLFLOW_TRACKING_USERNAME", user), ("MLFLOW_TRACKING_PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)


def ssgan(*args):
    return CliRunner().invoke(cli, list(args))


def train_args(out, *extra):
    return ["-q", "train", "-c", SMOKE, "--out", str(out), "--set", f"tracking.experiment={EXPERIMENT}",
            "--set", "tracking.sample_every=0", *extra]


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """`ssgan server --auth` on a free loopback port, with an experiment `team` holding one run registered as
    `team-model@champion` (by admin), the user `trainer` (EDIT on `team`) and `reader` (the default, READ)."""
    tmp = tmp_path_factory.mktemp("team-server")
    port, log = free_port(), tmp / "server.log"
    env = {**os.environ, "SSGAN_SERVER_ADMIN_PASSWORD": ADMIN_PASSWORD}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ssgan", "server", "--backend", f"sqlite:///{tmp / 'mlflow.db'}",
             "--artifacts", str(tmp / "artifacts"), "--port", str(port), "--auth", "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    mp = pytest.MonkeyPatch()
    try:
        wait_until_answers(proc, uri + "/health", log, START_TIMEOUT)
        as_user(mp, {"uri": uri}, "admin", ADMIN_PASSWORD)
        for user, password in USERS.items():
            result = ssgan("users", "add", user, "--password", password)
            assert result.exit_code == 0, result.output
        result = ssgan(*train_args(tmp / "admin-run", "--register", MODEL))
        assert result.exit_code == 0, result.output
        result = ssgan("users", "grant", "trainer", "--experiment", EXPERIMENT, "--permission", "EDIT")
        assert result.exit_code == 0, result.output
        yield {"uri": uri, "tmp": tmp}
    finally:
        mp.undo()
        stop(proc)


@contextlib.contextmanager
def logged_in(user, password):
    """MLflow's client in this process as `user` (tests that need to look as admin, whoever runs ssgan)."""
    saved = {v: os.environ.get(v) for v in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def admin_client(uri):
    """Admin's view: (client, the experiment, its runs)."""
    with logged_in("admin", ADMIN_PASSWORD):
        client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        return client, experiment, client.search_runs([experiment.experiment_id])


def get(url, auth=None):
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_an_anonymous_request_is_refused_and_reads_nothing(team_server):
    uri = team_server["uri"]
    _, experiment, runs = admin_client(uri)
    run_id = runs[0].info.run_id
    for endpoint in ("/api/2.0/mlflow/experiments/search?max_results=10",
                     f"/api/2.0/mlflow/runs/get?run_id={run_id}",
                     f"/api/2.0/mlflow/registered-models/alias?name={MODEL}&alias=champion",
                     f"/api/2.0/mlflow-artifacts/artifacts?path={experiment.experiment_id}",
                     f"/get-artifact?path=model&run_uuid={run_id}"):
        status, body = get(uri + endpoint)
        assert status == 401, (endpoint, status)
        assert EXPERIMENT not in body and run_id not in body and MODEL not in body
    status, body = get(uri + f"/api/2.0/mlflow/runs/get?run_id={run_id}", auth=("reader", "not-the-password"))
    assert status == 401 and run_id not in body
    assert get(uri + f"/api/2.0/mlflow/runs/get?run_id={run_id}", auth=("reader", USERS["reader"]))[0] == 200


def test_train_with_the_right_credentials_records_its_run(team_server, tmp_path, monkeypatch):
    as_user(monkeypatch, team_server, "trainer", USERS["trainer"])
    result = ssgan(*train_args(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    client, _, runs = admin_client(team_server["uri"])
    run = next(r for r in runs if r.info.run_id == summary["run_id"])
    assert run.info.status == "FINISHED" and run.info.user_id == "trainer"
    assert run.data.metrics["test_accuracy"] == summary["test_accuracy"]


@pytest.mark.parametrize("user, password, says", [
    (None, None, "asks for a login: set MLFLOW_TRACKING_USERNAME"),
    ("trainer", None, "asks for a login: set MLFLOW_TRACKING_PASSWORD"),
    ("trainer", "wrong-password-1", "refused user 'trainer': check MLFLOW_TRACKING_PASSWORD"),
    ("nobody", "any-password-12", "refused user 'nobody': check MLFLOW_TRACKING_PASSWORD"),
])
def test_no_or_wrong_credentials_stop_train_before_training(team_server, tmp_path, monkeypatch, user, password, says):
    _, _, before = admin_client(team_server["uri"])
    as_user(monkeypatch, team_server, user, password)
    result = ssgan(*train_args(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: MLflow tracking server {team_server['uri']} {says}")
    assert not (tmp_path / "out/summary.json").exists()
    assert len(admin_client(team_server["uri"])[2]) == len(before)  # no run opened


def test_a_read_only_user_is_told_before_training(team_server, tmp_path, monkeypatch):
    _, _, before = admin_client(team_server["uri"])
    as_user(monkeypatch, team_server, "reader", USERS["reader"])
    result = ssgan(*train_args(tmp_path / "out"))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: user 'reader' may not record runs in experiment 'team'")
    assert "(permission READ)" in result.output and "ssgan users grant reader" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert len(admin_client(team_server["uri"])[2]) == len(before)


def test_a_user_who_may_only_read_a_model_cannot_register_it_or_move_its_alias(team_server, tmp_path, monkeypatch):
    uri = team_server["uri"]
    # trainer may record runs in the experiment, but holds only the default READ on the model
    as_user(monkeypatch, team_server, "trainer", USERS["trainer"])
    _, _, before = admin_client(uri)
    result = ssgan(*train_args(tmp_path / "out", "--register", MODEL))
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: user 'trainer' may not register versions of model '{MODEL}'")
    assert len(admin_client(uri)[2]) == len(before)  # refused before any run

    for user in ("trainer", "reader"):  # and straight through MLflow's client: the server refuses (403)
        as_user(monkeypatch, team_server, user, USERS[user])
        client = mlflow.MlflowClient(tracking_uri=uri)
        run_id = before[0].info.run_id
        for refused in (lambda: client.create_model_version(MODEL, f"runs:/{run_id}/model", run_id),
                        lambda: client.set_registered_model_alias(MODEL, "champion", "1"),
                        lambda: client.delete_registered_model_alias(MODEL, "champion")):
            with pytest.raises(mlflow.exceptions.MlflowException) as e:
                refused()
            assert e.value.error_code == "PERMISSION_DENIED"
    with logged_in("admin", ADMIN_PASSWORD):
        client = mlflow.MlflowClient(tracking_uri=uri)
        assert client.get_model_version_by_alias(MODEL, "champion").version == "1"
        assert len(client.search_model_versions(f"name = '{MODEL}'")) == 1


def test_report_works_for_a_read_only_user(team_server, tmp_path, npz_path, monkeypatch):
    as_user(monkeypatch, team_server, "admin", ADMIN_PASSWORD)
    result = ssgan("-q", "compare", "-c", SMOKE, "--labels", "6", "--seeds", "1", "--methods",
                   "supervised,label_spreading", "--out", str(tmp_path / "compare"), "--set", "data.name=npz",
                   "--set", f"data.path={npz_path}", "--set", f"tracking.experiment={EXPERIMENT}",
                   "--set", "tracking.sample_every=0")
    assert result.exit_code == 0, result.output
    as_user(monkeypatch, team_server, "reader", USERS["reader"])
    result = ssgan("-q", "report", "--experiment", EXPERIMENT, "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    rebuilt = json.loads((tmp_path / "report/summary.json").read_text())
    assert rebuilt == json.loads((tmp_path / "compare/summary.json").read_text())


def test_users_commands_need_the_admin(team_server, monkeypatch):
    as_user(monkeypatch, team_server, "reader", USERS["reader"])
    result = ssgan("users", "add", "mallory", "--password", "mallory-password")
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: cannot add user 'mallory' on {team_server['uri']}: only the server's "
                                     "admin may (MLFLOW_TRACKING_USERNAME=admin)")
    as_user(monkeypatch, team_server, "admin", ADMIN_PASSWORD)
    result = ssgan("users", "add", "reader", "--password", "another-password")
    assert result.exit_code == 2 and "that user exists already" in result.output
    result = ssgan("users", "add", "shorty", "--password", "short")
    assert result.exit_code == 2 and "at least 12" in result.output
    result = ssgan("users", "grant", "reader", "--experiment", "no-such-experiment", "--permission", "EDIT")
    assert result.exit_code == 2 and "experiment 'no-such-experiment' does not exist" in result.output


# --- the server's own side: what it refuses to start with, and what it writes -------------------------------

def test_a_server_beyond_loopback_needs_the_admin_password(tmp_path):
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SSGANError, match="set SSGAN_SERVER_ADMIN_PASSWORD"):
        plan_server(backend, str(tmp_path / "a"), "0.0.0.0", 5000, environ={})
    with pytest.raises(SSGANError, match="is 5 characters long"):
        plan_server(backend, str(tmp_path / "a"), "0.0.0.0", 5000, environ={"SSGAN_SERVER_ADMIN_PASSWORD": "short"})
    result = CliRunner(env={"SSGAN_SERVER_ADMIN_PASSWORD": None}).invoke(
        cli, ["server", "--backend", backend, "--host", "0.0.0.0"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before writing anything


def test_auth_is_on_beyond_loopback_and_off_on_it_unless_asked(tmp_path):
    backend, env = f"sqlite:///{tmp_path / 'mlflow.db'}", {"SSGAN_SERVER_ADMIN_PASSWORD": ADMIN_PASSWORD}
    assert not plan_server(backend, "a", "127.0.0.1", 5000, environ={}).auth
    assert not plan_server(backend, "a", "localhost", 5000, environ={}).auth
    assert plan_server(backend, "a", "127.0.0.1", 5000, auth=True, environ=env).auth
    plan = plan_server(backend, "a", "0.0.0.0", 5000, environ=env)
    assert plan.auth and plan.argv[-2:] == ["--app-name", "basic-auth"]
    assert plan.auth_store == f"sqlite:///{tmp_path / 'basic_auth.db'}"  # beside the backend
    postgres = "postgresql://u:pw@db:5432/mlflow"
    assert auth_store_uri(postgres, tmp_path) == postgres  # the same database (the auth app's tables apart)
    assert redacted(postgres) == "postgresql://u:***@db:5432/mlflow"  # as messages show it
    ini = (tmp_path / "basic_auth.ini").read_text()
    assert "admin_password" not in ini and ADMIN_PASSWORD not in ini and "admin_username = admin" in ini
    assert plan.env["MLFLOW_AUTH_ADMIN_PASSWORD"] == ADMIN_PASSWORD
    for name in ("basic_auth.ini", "flask_secret"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0  # the owner's only
    secret = plan.env["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert len(secret) == 64 and plan_server(backend, "a", "0.0.0.0", 5000, environ=env).env[
        "MLFLOW_FLASK_SERVER_SECRET_KEY"] == secret  # kept across restarts


def test_an_existing_user_store_refuses_another_admin_password(team_server):
    backend = f"sqlite:///{team_server['tmp'] / 'mlflow.db'}"
    with pytest.raises(SSGANError, match="is not the password of user 'admin'"):
        plan_server(backend, "a", "0.0.0.0", 5000, environ={"SSGAN_SERVER_ADMIN_PASSWORD": "another-password"})
    assert plan_server(backend, "a", "0.0.0.0", 5000, environ={"SSGAN_SERVER_ADMIN_PASSWORD": ADMIN_PASSWORD}).auth


# --- https:// through a TLS-terminating proxy (as behind caddy or nginx) ------------------------------------

@pytest.fixture(scope="module")
def tls_proxy(team_server, tmp_path_factory):
    """A TLS proxy on a free loopback port in front of the team's server, with a self-signed certificate for
    127.0.0.1 (openssl); yields its https:// URI and the certificate's path."""
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    backend = ("127.0.0.1", int(team_server["uri"].rsplit(":", 1)[1]))

    def pipe(source, target):
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)

    class Proxy(socketserver.ThreadingTCPServer):
        daemon_threads = True

        def get_request(self):
            conn, address = super().get_request()
            return context.wrap_socket(conn, server_side=True), address

    class Forward(socketserver.BaseRequestHandler):
        def handle(self):
            with socket.create_connection(backend) as upstream:
                back = threading.Thread(target=pipe, args=(upstream, self.request), daemon=True)
                back.start()
                pipe(self.request, upstream)
                back.join(timeout=60)

    with Proxy(("127.0.0.1", 0), Forward) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        yield {"uri": f"https://127.0.0.1:{proxy.server_address[1]}", "cert": str(cert), "backend": team_server["uri"]}
        proxy.shutdown()


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # asked for: INSECURE_TLS
def test_https_with_the_servers_certificate_or_insecure_tls(tls_proxy, tmp_path, monkeypatch):
    as_user(monkeypatch, tls_proxy, "reader", USERS["reader"])
    result = ssgan("-q", "train", "-c", SMOKE, "--out", str(tmp_path / "out"))  # untrusted: one line, no training
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: MLflow tracking server {tls_proxy['uri']}: its TLS certificate is not "
                                     "trusted: set MLFLOW_TRACKING_SERVER_CERT_PATH to the certificate of its "
                                     "authority, or MLFLOW_TRACKING_INSECURE_TLS=true to skip the check")
    for var, value in (("MLFLOW_TRACKING_SERVER_CERT_PATH", tls_proxy["cert"]), ("MLFLOW_TRACKING_INSECURE_TLS", "true")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            result = ssgan(*train_args(tmp_path / var))  # reaches the server, which says what reader may do
            assert result.exit_code == 2, result.output
            assert result.output.startswith("error: user 'reader' may not record runs in experiment 'team'")
            as_user(m, tls_proxy, "trainer", USERS["trainer"])
            result = ssgan(*train_args(tmp_path / var))
            assert result.exit_code == 0, result.output
            run_id = json.loads((tmp_path / var / "summary.json").read_text())["run_id"]
            assert run_id in {r.info.run_id for r in admin_client(tls_proxy["backend"])[2]}


def test_the_cli_offers_the_permissions_mlflow_knows():
    from mlflow.server.auth.permissions import ALL_PERMISSIONS

    from ssgan import cli as cli_module
    from ssgan.tracking import server

    assert tuple(cli_module.PERMISSIONS) == server.PERMISSIONS and set(server.PERMISSIONS) <= set(ALL_PERMISSIONS)


def test_a_login_refused_mid_run_keeps_the_records_for_ssgan_sync(team_server):
    """A password or permission changed while a run trains: the server's 401 / 403 count as the store being
    away (the records stay in OUT/mlflow-spool for `ssgan sync`), not as records it refused for good."""
    from ssgan.tracking.store import is_outage, store_failure

    _, experiment, _ = admin_client(team_server["uri"])
    for user, password, says in (("reader", USERS["reader"], "denied this user permission"),
                                 ("trainer", "an-old-password", "refused the login")):
        with logged_in(user, password):
            with pytest.raises(mlflow.exceptions.MlflowException) as e:
                mlflow.MlflowClient(tracking_uri=team_server["uri"]).create_run(experiment.experiment_id)
        assert is_outage(e.value) and says in store_failure(e.value)
