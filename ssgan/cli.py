"""`ssgan` command line: parse, build the config, call the library."""
from __future__ import annotations

import json
import logging
import sys

import click

from ssgan.config import load_config
from ssgan.errors import SSGANError


class _Group(click.Group):
    """Turns library errors into one-line messages with exit status 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SSGANError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)


@click.group(cls=_Group)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(quiet: bool) -> None:
    """Semi-supervised GAN classifiers for few labels, measured against a supervised baseline."""
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@cli.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key, e.g. train.epochs=5.")
@click.option("--mode", type=click.Choice(["ssgan", "supervised"]), help="Overrides the config's mode.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write summary.json here.")
def train(config_path, overrides, mode, out_dir) -> None:
    """Train a classifier (ssgan or the supervised baseline) and track it in MLflow."""
    from ssgan.run import run_training

    overrides = list(overrides) + ([f"mode={mode}"] if mode else [])
    cfg = load_config(config_path, overrides)
    summary = run_training(cfg, out_dir)
    click.echo(json.dumps({k: summary[k] for k in ("run_id", "mode", "labels", "test_accuracy")}))


def main() -> None:
    cli(prog_name="ssgan")
