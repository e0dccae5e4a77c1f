"""`llmaas worker`: run a fine-tuning worker (claims queued jobs from the shared database, trains LoRA adapters)."""

from __future__ import annotations

import json
import os

import click


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Settings file (YAML or TOML).",
)
@click.option("--data-dir", default=None, help="Where the SQLite file, files and adapters live.")
@click.option(
    "--parent-pid", type=int, default=None, hidden=True, help="Exit when this process is gone (set by `llmaas serve`)."
)
def worker(config_file: str | None, data_dir: str | None, parent_pid: int | None) -> None:
    """Run a fine-tuning worker until SIGTERM. Start as many as you like against one database: each job runs once."""
    from llmaas.config import Settings, load_settings
    from llmaas.log import configure_logging
    from llmaas.services import build_worker
    from llmaas.training.spawn import SETTINGS_ENV
    from llmaas.training.worker import run

    inherited = os.environ.pop(SETTINGS_ENV, None)
    settings = Settings(**json.loads(inherited)) if inherited else load_settings(config_file, data_dir=data_dir)
    configure_logging(settings)
    run(build_worker(settings), parent_pid=parent_pid)


def register(cli: click.Group) -> None:
    cli.add_command(worker)
