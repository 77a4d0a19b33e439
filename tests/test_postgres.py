"""PostgreSQL as a team's store: a throwaway PostgreSQL server started from the machine's binaries (initdb,
pg_ctl), `mlflow server` on it, two comparisons at once and a report; no run is lost or doubled.
Needs PostgreSQL's server binaries (Debian: apt-get install postgresql; .ci/run installs it) and the
`postgres` extra (psycopg 3; `make install` installs it)."""
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest

from tests.test_server import START_TIMEOUT, free_port, stop, wait_until_answers

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs/smoke.yaml")


def pg_bin(name: str):
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    return found


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the `postgres` user then (Debian's package makes it)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres_uri():
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed: pip install 'ssgan[postgres]'")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no `postgres` user to run PostgreSQL as (apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="ssgan-pg-"))  # not under pytest's folders: those only root may enter
    data, port = tmp / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres")
    subprocess.run(as_postgres([initdb, "-D", str(data), "-U", "ssgan", "--auth=trust", "-E", "UTF8"]),
                   check=True, capture_output=True)
    subprocess.run(as_postgres([pg_ctl, "-D", str(data), "-l", str(tmp / "pg.log"), "-w", "-o",
                                f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={port} user=ssgan dbname=postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://ssgan@127.0.0.1:{port}/mlflow"  # the URI docs/usage.md gives (psycopg 3)
    finally:
        subprocess.run(as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server(postgres_uri, tmp_path_factory):
    """`mlflow server` with the PostgreSQL backend, as `make server BACKEND=postgresql://...` starts it."""
    tmp = tmp_path_factory.mktemp("pg-server")
    port, log = free_port(), tmp / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_uri,
             "--artifacts-destination", str(tmp / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2"], stdout=out, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, uri + "/health", log, START_TIMEOUT)
        yield uri
    finally:
        stop(proc)


def test_two_comparisons_at_once_on_postgresql_lose_and_double_no_run(pg_server, tmp_path, npz_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": pg_server}
    args = ["-q", "compare", "-c", SMOKE, "--labels", "6", "--seeds", "2", "--methods", "ssgan,supervised,label_spreading",
            "--set", "data.name=npz", "--set", f"data.path={npz_path}", "--set", "tracking.experiment=team",
            "--set", "train.epochs=1", "--set", "tracking.sample_every=0"]
    procs = [subprocess.Popen([sys.executable, "-m", "ssgan", *args, "--out", str(tmp_path / name)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    client = mlflow.MlflowClient(pg_server)
    experiment = client.get_experiment_by_name("team")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kind") == "compare"]
    assert len(parents) == 2 and len(runs) == 2 + 2 * 6  # each: 3 methods x 2 seeds, each once
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        grid = sorted((r.data.tags["method"], r.data.tags["split_seed"]) for r in children)
        assert grid == sorted((m, s) for m in ("ssgan", "supervised", "label_spreading") for s in ("0", "1"))
        assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in children)

    report = subprocess.run([sys.executable, "-m", "ssgan", "-q", "report", "--experiment", "team", "--parent",
                             parents[0].info.run_id, "--out", str(tmp_path / "report")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    written = json.loads((tmp_path / ("a" if parents[0].info.run_id == json.loads(
        (tmp_path / "a" / "summary.json").read_text())["parent_run_id"] else "b") / "summary.json").read_text())
    assert summary["by_budget"] == written["by_budget"]  # the report rebuilt from PostgreSQL is the one written


def test_logins_keep_their_users_in_the_same_postgresql_database(postgres_uri, tmp_path):
    """`make server HOST=0.0.0.0 BACKEND=postgresql://...`: the user store is the backend's own database."""
    import psycopg
    from click.testing import CliRunner

    from ssgan.cli import cli

    port, log = free_port(), tmp_path / "server.log"
    env = {**os.environ, "SSGAN_SERVER_ADMIN_PASSWORD": "admin-password-for-pg"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ssgan", "server", "--backend", postgres_uri, "--artifacts",
                                 str(tmp_path / "artifacts"), "--port", str(port), "--auth", "--workers", "1"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(proc, uri + "/health", log, START_TIMEOUT)
        result = CliRunner(env={"MLFLOW_TRACKING_URI": uri, "MLFLOW_TRACKING_USERNAME": "admin",
                                "MLFLOW_TRACKING_PASSWORD": "admin-password-for-pg"}).invoke(
            cli, ["users", "add", "alice", "--password", "alice-password-1"])
        assert result.exit_code == 0, result.output
    finally:
        stop(proc)
    with psycopg.connect(postgres_uri) as conn:
        users = {row[0] for row in conn.execute("SELECT username FROM users")}
        assert users == {"admin", "alice"}
        assert conn.execute("SELECT count(*) FROM experiments").fetchone()[0] >= 1  # the tracking tables beside
    assert not (tmp_path / "basic_auth.db").exists() and (tmp_path / "basic_auth.ini").exists()
    # restarted with another admin password: refused, in one line, before the server starts
    result = subprocess.run([sys.executable, "-m", "ssgan", "server", "--backend", postgres_uri, "--port", str(port),
                             "--auth"], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                            env={**env, "SSGAN_SERVER_ADMIN_PASSWORD": "another-password"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: SSGAN_SERVER_ADMIN_PASSWORD is not the password of user 'admin' in the user store {postgres_uri}; "
        "set it to admin's current password"]  # (its URI has no password to hide: tests/test_auth.py hides one)
