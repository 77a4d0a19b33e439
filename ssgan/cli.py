"""`ssgan` command line: parse, build the config, call the library."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

import click

from ssgan.config import load_config, modes
from ssgan.errors import SSGANError, disk_full


# Exit statuses: 0 done; 2 bad input or a fault, said in one line; 3 the watchdog stopped training (or a
# comparison's run failed); 4 trained, but records are not in MLflow yet (its store did not answer): they
# wait in OUT/mlflow-spool and `ssgan sync OUT` sends them; 130 interrupted (Ctrl-C or SIGTERM): the training
# state is saved and the same command with --resume finishes the run.
EXIT_BAD_INPUT, EXIT_STOPPED, EXIT_NOT_IN_MLFLOW, EXIT_INTERRUPTED = 2, 3, 4, 130
# what a user may do with an experiment or a registered model on a server with logins (MLflow's basic-auth app;
# ssgan.tracking.server.PERMISSIONS, named here too so that `ssgan --help` imports no MLflow)
PERMISSIONS = ["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"]


class _Group(click.Group):
    """Turns library errors, and failures to read or write a named file, into one-line messages with exit
    status 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SSGANError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(getattr(e, "exit_status", EXIT_BAD_INPUT))
        except OSError as e:  # e.g. the disk filled up while writing a summary
            if e.errno in (errno.ENOSPC, errno.EDQUOT) and e.filename is None:
                click.echo(f"error: the disk is full ({e.strerror}); free space or choose another --out", err=True)
                ctx.exit(EXIT_BAD_INPUT)
            if e.filename is None or e.errno == errno.EPIPE:
                raise
            full = disk_full(e.filename, e)
            click.echo(f"error: {full or f'{e.filename!r}: {e.strerror or e}'}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except Exception as e:
            if type(e).__name__ != "MlflowException":  # the store failed a request (MLflow imported by then)
                raise
            from ssgan.tracking.store import store_failure

            click.echo(f"error: the MLflow store ({mlflow_uri()}) failed: {store_failure(e)}", err=True)
            ctx.exit(EXIT_BAD_INPUT)


def mlflow_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _out_folder(out: Optional[str], holds_file: bool = False) -> None:
    """Check that the folder of --out (a file's folder when `holds_file`) can be made and takes a file, so that
    an unusable --out is a one-line error before any work rather than a traceback after it. Folders made for the
    check are removed again: the command makes them when it writes (and a command that fails leaves none)."""
    if out is None:
        return
    folder = Path(out).parent if holds_file else Path(out)
    made = [f for f in (folder, *folder.parents) if not f.exists()]  # the deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        which = f"the folder {str(folder)!r}" if holds_file else "the folder"
        raise SSGANError(f"--out {out!r}: {which} cannot be created or written ({e.strerror or e}); "
                         "choose another --out") from None
    finally:
        for f in made:
            with contextlib.suppress(OSError):
                f.rmdir()


@click.group(cls=_Group)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(quiet: bool) -> None:
    """Semi-supervised GAN classifiers for few labels, measured against a supervised baseline."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow logs a failed SQL request with its traceback before raising it; ssgan reports it in one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    # urllib3's notes on connections it retries or drops: ssgan says what a failed request means, once
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded JSON file
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its loggers' level when first imported


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config file; without it, the built-in defaults (ssgan/config.py).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.epochs=5.")
@click.option("--mode", type=click.Choice(modes()), help="Overrides the config's mode: ssgan, the supervised "
              "baseline, or a consistency method (vat, mean_teacher, pi_model; docs/training.md).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Folder (created if missing) for summary.json (with --seeds: summary-seed<S>.json) and the "
              "training state train_state.pt, saved "
              "while training and on Ctrl-C or SIGTERM, which --resume continues from. Without --out the run is "
              "only in MLflow and cannot be resumed.")
@click.option("--register", "register_name", metavar="NAME", help="Register the logged model in MLflow's registry as NAME.")
@click.option("--alias", default="champion", show_default=True, help="With --register: the alias set on the new version.")
@click.option("--seeds", "seeds", metavar="S1,S2,...", help="Train on these split seeds at once (one MLflow run each; "
              "on a GPU about the time of one seed).")
@click.option("--members", type=int, help="Train K ssgan runs of the split (training seeds S, S+1000, ...) at once "
              "and log their ensemble: class probabilities averaged, one MLflow run and model.")
@click.option("--resume", is_flag=True, help="Continue the unfinished run (--seeds, --members) whose training state --out holds "
              "(OUT/train_state.pt, saved while training and on Ctrl-C or SIGTERM), with the same config.")
def train(config_path, overrides, mode, out_dir, register_name, alias, seeds, members, resume) -> None:
    """Train a classifier (ssgan or the supervised baseline) and track it in MLflow.

    Without -c it trains the built-in default config (ssgan/config.py): ssgan mode on scikit-learn's 8x8
    digits with 100 labels (split seed 0), the MLP of Salimans et al. 2016 for MNIST, 10 epochs, in the
    MLflow experiment "ssgan".
    """
    from ssgan.training.distributed import launched, leave
    from ssgan.training.resume import stop_on_sigterm
    from ssgan.serving.pyfunc import check_alias

    check_alias(alias)
    stop_on_sigterm()
    world = launched()  # under torchrun: one run on world.size processes; rank 0 records it and speaks
    if not world.main:  # its warnings are rank 0's too: one copy of each
        logging.getLogger("ssgan").setLevel(logging.ERROR)
    if world.spread and (seeds is not None or members is not None):
        raise SSGANError(f"torchrun trains one run on {world.size} processes: drop --seeds / --members (or train them "
                         "without torchrun)")
    overrides = list(overrides) + ([f"mode={mode}"] if mode else [])
    cfg = load_config(config_path, overrides)
    _out_folder(out_dir)
    try:
        _train(cfg, out_dir, register_name, alias, seeds, members, resume, world.main)
    except SystemExit:  # an exit status that says how training ended
        leave()
        raise
    leave()  # not after an error: leaving waits for ranks that may be gone


def _train(cfg, out_dir, register_name, alias, seeds, members, resume, main: bool) -> None:
    from ssgan.tracking.run import run_training, run_training_seeds

    keys = ("run_id", "mode", "labels", "test_accuracy", "stop_reason") + (("registered_model",) if register_name else ())
    if members is not None:
        from ssgan.tracking.ensemble import run_ensemble

        if members < 2 or seeds is not None or cfg.mode != "ssgan":
            raise SSGANError(f"--members {members}: an ensemble needs at least 2 members of one split, in ssgan mode "
                             "(not with --seeds or --mode supervised)")
        summaries = [run_ensemble(cfg, members, out_dir, nested=False, register=register_name, alias=alias,
                                  resume=resume)]
        click.echo(json.dumps({"members": members, **{k: summaries[0][k] for k in keys}}))
    elif seeds is not None:
        if register_name:
            raise SSGANError("--register registers one model: train that seed alone (--set data.split_seed=S), not --seeds")
        summaries = run_training_seeds(cfg, _seed_list(seeds), out_dir, resume=resume)
        click.echo(json.dumps([{"split_seed": s["split_seed"], **{k: s[k] for k in keys}} for s in summaries]))
    else:
        summaries = [run_training(cfg, out_dir, register=register_name, alias=alias, resume=resume)]
        if main:  # under torchrun rank 0 speaks for the run
            click.echo(json.dumps({k: summaries[0][k] for k in keys}))
    failed = [s for s in summaries if s["stop_reason"] not in ("completed", "interrupted")]
    for s in failed if main else []:  # the watchdog stopped it: one line each
        seed = f"seed {s['split_seed']} " if len(summaries) > 1 else ""
        click.echo(f"{seed}stopped early ({s['stop_reason']}): {s['stop_message']}; the last good epoch's weights "
                   f"and all metrics are in run {s['run_id']}", err=True)
    if failed:
        sys.exit(EXIT_STOPPED)
    if any(s["stop_reason"] == "interrupted" for s in summaries):  # Ctrl-C or SIGTERM: the state is saved
        sys.exit(EXIT_INTERRUPTED)
    if any("not_in_mlflow" in s for s in summaries):  # trained; said in one line what waits and how to send it
        sys.exit(EXIT_NOT_IN_MLFLOW)


def _one_process(command: str) -> None:
    """Commands of many runs are started once: torchrun spreads one run over processes, --ray spreads many runs."""
    from ssgan.training.distributed import launched

    if launched().spread:
        raise SSGANError(f"ssgan {command} trains many runs: start it once, not under torchrun (spread its runs over "
                         "machines with --ray)")


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        seeds = []
    if len(seeds) < 1 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SSGANError(f"--seeds {text!r} must be distinct non-negative integers separated by commas, e.g. 0,1,2")
    return seeds


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Base YAML config.")
@click.option("--tricks", "tricks", required=True, help="Comma-separated tricks to toggle, e.g. label_smoothing,dropout.")
@click.option("--seeds", type=int, default=3, show_default=True, help="Split seeds 0..N-1 per variant.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of the base config.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="ablation", show_default=True,
              help="Folder for the table (ablation.md), its data (ablation.json) and its chart (ablation.png).")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run every (variant, seed) as a Ray task: 'local', 'auto' "
              "or ray://HOST:10001 (as compare --ray).")
@click.option("--cpus-per-run", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="With --ray: CPUs per run (and the run's torch threads).")
@click.option("--gpus-per-run", type=click.FloatRange(min=0.0), help="With --ray: GPUs per run (default 1 when "
              "the cluster has GPUs, else 0).")
def ablate(config_path, tricks, seeds, overrides, out_dir, ray_address, cpus_per_run, gpus_per_run) -> None:
    """Train the base config and one variant per trick (toggled) over several seeds; report the differences."""
    _one_process("ablate")
    from ssgan.experiments.ablate import TOGGLES, run_ablation
    from ssgan.experiments.cluster import RayOptions
    from ssgan.experiments.origin import ConfigOrigin

    names = [t.strip() for t in tricks.split(",") if t.strip()]
    if not names:
        raise SSGANError(f"--tricks is empty; choose from {', '.join(TOGGLES)}")
    cfg = load_config(config_path, overrides)
    _out_folder(out_dir)
    if ray_address is None and (gpus_per_run is not None or cpus_per_run != 1.0):
        raise SSGANError("--cpus-per-run and --gpus-per-run go with --ray ADDRESS")
    ray = RayOptions(ray_address, cpus_per_run, gpus_per_run) if ray_address else None
    summary = run_ablation(cfg, names, seeds, out_dir, origin=ConfigOrigin.of(cfg, config_path, overrides), ray=ray)
    click.echo((Path(out_dir) / "ablation.md").read_text(), nl=False)
    click.echo(f"parent run {summary['parent_run_id']}; table, JSON and chart in {out_dir}/", err=True)


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="Base YAML config.")
@click.option("--labels", "budgets", required=True, help="Comma-separated label budgets; 'all' = every training label, e.g. 20,50,100,all.")
@click.option("--seeds", type=int, default=5, show_default=True, help="Split seeds 0..N-1 per budget.")
@click.option("--methods", default="ssgan,supervised,label_spreading,self_training", show_default=True,
              help="Comma-separated methods; ssgan_ensemble adds --members ssgan runs per split, averaged.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of the base config.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="compare", show_default=True,
              help="Folder for the report (report.md, report.html, summary.json, learning_curve.png, "
              "confusion_best_ssgan.png) and, while runs train, their saved states (state/) that --resume uses.")
@click.option("--resume", is_flag=True, help="Continue the latest comparison with the same arguments and --out: skip "
              "its finished runs, continue interrupted ones from their saved training state.")
@click.option("--seeds-at-once", is_flag=True, help="Train ssgan's (and supervised's) seeds of a budget together: "
              "on a GPU about the time of one seed.")
@click.option("--members", type=int, default=3, show_default=True,
              help="ssgan_ensemble: ssgan runs per split (training seeds S, S+1000, ...), probabilities averaged.")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run every (method, budget, seed) as a Ray task: 'local' "
              "(a Ray instance on this machine), 'auto' (the cluster `ray start` joined) or ray://HOST:10001. Needs "
              "pip install 'ssgan[ray]' and a store every node reaches.")
@click.option("--cpus-per-run", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="With --ray: CPUs per run (and the run's torch threads).")
@click.option("--gpus-per-run", type=click.FloatRange(min=0.0), help="With --ray: GPUs per run (default 1 when "
              "the cluster has GPUs, else 0).")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Folder of the runs' training states (default "
              "OUT/state); with a Ray cluster, storage every node sees, so that a retried run continues.")
def compare(config_path, budgets, seeds, methods, overrides, out_dir, resume, seeds_at_once, members, ray_address,
            cpus_per_run, gpus_per_run, state_dir) -> None:
    """Train and evaluate every method on every label budget x split seed, on the same splits; report the gain."""
    _one_process("compare")
    from ssgan.experiments.cluster import RayOptions
    from ssgan.experiments.compare import run_comparison
    from ssgan.experiments.origin import ConfigOrigin
    from ssgan.experiments.plan import Plan
    from ssgan.training.resume import stop_on_sigterm

    stop_on_sigterm()  # a batch system's stop request: the current run's state is saved, as on Ctrl-C
    plan = Plan.parse(budgets, seeds, methods, members)
    cfg = load_config(config_path, overrides)
    _out_folder(out_dir)
    if ray_address is None and (gpus_per_run is not None or state_dir is not None or cpus_per_run != 1.0):
        raise SSGANError("--cpus-per-run, --gpus-per-run and --state-dir go with --ray ADDRESS")
    ray = RayOptions(ray_address, cpus_per_run, gpus_per_run) if ray_address else None
    summary = run_comparison(cfg, plan, out_dir, resume=resume, seeds_at_once=seeds_at_once,
                             origin=ConfigOrigin.of(cfg, config_path, overrides), ray=ray, state_dir=state_dir)
    click.echo((Path(out_dir) / "report.md").read_text(), nl=False)
    click.echo(f"parent run {summary['parent_run_id']}; report in {out_dir}/", err=True)
    if not summary["complete"]:  # exit status 3, as `train` after a watchdog stop (130 when interrupted)
        click.echo(f"{len(summary['failed'])} run(s) failed or missing, listed in the report; the same command "
                   "with --resume reruns those that crashed, were interrupted or never ran", err=True)
        sys.exit(EXIT_INTERRUPTED if summary.get("interrupted") else EXIT_STOPPED)


@cli.command()
@click.option("--experiment", required=True, help="MLflow experiment holding the comparison.")
@click.option("--parent", "parent_run_id", help="The comparison's parent run id (default: the latest comparison).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="report", show_default=True,
              help="Folder for the rebuilt report: report.md, report.html, summary.json and the figures.")
@click.option("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
def report(experiment, parent_run_id, out_dir, tracking_uri) -> None:
    """Rebuild a comparison's report from the MLflow store, without re-running anything."""
    from ssgan.experiments.report import report_from_store

    _out_folder(out_dir)
    summary = report_from_store(experiment, parent_run_id, out_dir, tracking_uri)
    click.echo((Path(out_dir) / "report.md").read_text(), nl=False)
    click.echo(f"parent run {summary['parent_run_id']}; report in {out_dir}/", err=True)


@cli.command()
@click.option("--model", "model_ref", required=True,
              help="A run id, a models:/NAME@ALIAS (or runs:/, or summary.json's model_uri) URI, a logged model folder "
                   "or a checkpoint.pt file.")
@click.option("--class", "class_name", help="Class to draw (conditional generators).")
@click.option("-n", "count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--tracking-uri", help="MLflow store holding the run (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
def sample(model_ref, class_name, count, seed, tracking_uri, out_path) -> None:
    """Write a grid of generated samples from a trained run."""
    import mlflow

    from ssgan.serving.samples import write_samples
    from ssgan.tracking.store import resolve_uri

    _out_folder(out_path, holds_file=True)
    mlflow.set_tracking_uri(resolve_uri(tracking_uri))
    click.echo(str(write_samples(model_ref, out_path, count, class_name, seed)))


@cli.command()
@click.option("--model", "model_ref", required=True,
              help="A run id, a models:/NAME@ALIAS (or runs:/) URI, a logged model folder or a checkpoint.pt file.")
@click.option("--input", "input_path", required=True, help="A CSV / parquet table, an .npz (array X) or a folder of images.")
@click.option("--out", "out_path", default="predictions.csv", show_default=True, type=click.Path(dir_okay=False))
@click.option("--tracking-uri", help="MLflow store holding the model (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db).")
def predict(model_ref, input_path, out_path, tracking_uri) -> None:
    """Predict classes for new inputs: one CSV row per input with the class name and per-class probabilities."""
    import mlflow

    from ssgan.serving.predict import write_predictions
    from ssgan.tracking.store import resolve_uri

    _out_folder(out_path, holds_file=True)
    mlflow.set_tracking_uri(resolve_uri(tracking_uri))
    click.echo(str(write_predictions(model_ref, input_path, out_path)))


@cli.command()
@click.argument("folder", type=click.Path(exists=True))
@click.option("--tracking-uri", help="Send to this store rather than the one the records were meant for (the same "
                                     "store at a new address).")
def sync(folder, tracking_uri) -> None:
    """Send to MLflow what a training kept in FOLDER (its --out) while its store did not answer: metrics, tags,
    files, the model, the run's end; in order, each once. Exit status 4 while the store is still away."""
    from ssgan.tracking.spool import Outage, fail_fast_on_http, sync_folder, unsent

    waiting = unsent(Path(folder))
    if not waiting:
        click.echo(f"nothing to send: no records in {folder} wait for MLflow")
        return
    fail_fast_on_http()
    try:
        sent, journals = sync_folder(Path(folder), tracking_uri)
    except Outage as e:
        left = unsent(Path(folder))
        raise NotInMLflow(f"the MLflow store does not answer ({e}); {left} record(s) still wait in {folder}: "
                          f"run `ssgan sync {folder}` again when it is back") from None
    click.echo(f"{sent} record(s) of {journals} training(s) sent to MLflow")


@cli.command()
@click.option("--backend", default="sqlite:///mlflow.db", show_default=True,
              help="Where runs live: a SQLite file or a SQLAlchemy URI (postgresql://user:PW@host:5432/db).")
@click.option("--artifacts", default="./mlartifacts", show_default=True,
              help="Where the server keeps artifacts; clients upload and download them through it.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--auth/--no-auth", default=None, help="Users and passwords (MLflow's basic-auth app); default: on "
              "unless --host is loopback. Needs $SSGAN_SERVER_ADMIN_PASSWORD (the user admin's).")
@click.option("--default-permission", default="READ", show_default=True,
              type=click.Choice(PERMISSIONS),
              help="With --auth: what every user may do where nobody granted them more.")
@click.option("--allowed-hosts", help="Host names the server answers to besides localhost and private IPs (its DNS "
              "name behind a reverse proxy).")
@click.option("--workers", type=click.IntRange(min=1), help="Server worker processes (MLflow's default: 4).")
def server(backend, artifacts, host, port, auth, default_permission, allowed_hosts, workers) -> None:
    """Run a team's MLflow tracking server: `mlflow server`, with logins whenever it listens beyond this machine."""
    from ssgan.tracking.server import is_loopback, plan_server, redacted, serve

    plan = plan_server(backend, artifacts, host, port, auth, default_permission, allowed_hosts, workers)
    if plan.auth:
        click.echo(f"users and passwords on: user store {redacted(plan.auth_store)}, config {plan.folder}/basic_auth.ini; "
                   "add users with `ssgan users add`", err=True)
    elif not is_loopback(host):
        click.echo(f"warning: no logins: anyone who reaches {host}:{port} can read, change and delete every run and "
                   "model; drop --no-auth", err=True)
    serve(plan)


@cli.group()
def users() -> None:
    """Users of a tracking server with logins (`ssgan server --auth`). Run as its admin: MLFLOW_TRACKING_USERNAME=admin,
    MLFLOW_TRACKING_PASSWORD=the admin's password, and the server's address in --tracking-uri or
    MLFLOW_TRACKING_URI."""


@users.command("add")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, envvar="SSGAN_USER_PASSWORD",
              help="The new user's password (at least 12 characters); asked for when not given or in "
                   "$SSGAN_USER_PASSWORD.")
@click.option("--tracking-uri", help="The server (default: $MLFLOW_TRACKING_URI).")
def users_add(username, password, tracking_uri) -> None:
    """Add a user. What it may do: the server's --default-permission, plus what `ssgan users grant` gives."""
    from ssgan.tracking.access import add_user
    from ssgan.tracking.server import check_password_length

    check_password_length(password, "the password")
    uri = _server_uri(tracking_uri)
    add_user(uri, username, password)
    click.echo(f"user {username!r} added to {uri}")


@users.command("grant")
@click.argument("username")
@click.option("--experiment", help="An experiment's name: to record runs in it, grant EDIT.")
@click.option("--model", help="A registered model's name: to register versions and move its aliases, grant EDIT.")
@click.option("--permission", "level", required=True, type=click.Choice(PERMISSIONS))
@click.option("--tracking-uri", help="The server (default: $MLFLOW_TRACKING_URI).")
def users_grant(username, experiment, model, level, tracking_uri) -> None:
    """Set what a user may do with one experiment or one registered model."""
    import mlflow

    from ssgan.tracking.access import grant

    if (experiment is None) == (model is None):
        raise SSGANError("name one --experiment or one --model")
    uri = _server_uri(tracking_uri)
    if experiment is not None:
        found = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
        if found is None:
            raise SSGANError(f"experiment {experiment!r} does not exist on {uri}")
        grant(uri, username, "experiment", found.experiment_id, level)
    else:
        grant(uri, username, "registered_model", model, level)
    click.echo(f"user {username!r} now has {level} on {'experiment' if experiment else 'model'} "
               f"{experiment or model!r}")


def _server_uri(tracking_uri: Optional[str]) -> str:
    """The tracking server a `users` command talks to, after checking that it answers and takes the login."""
    from ssgan.tracking.store import check_reachable, fail_fast_on_http, resolve_uri

    uri = resolve_uri(tracking_uri)
    if not uri.startswith(("http://", "https://")):
        raise SSGANError(f"{uri} is not a tracking server: give its http(s):// address in --tracking-uri or "
                         "MLFLOW_TRACKING_URI")
    fail_fast_on_http()
    check_reachable(uri)
    return uri


class NotInMLflow(SSGANError):
    exit_status = EXIT_NOT_IN_MLFLOW


def main() -> None:
    cli(prog_name="ssgan")
