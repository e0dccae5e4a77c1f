"""`llmaas db upgrade|current`: migrate the database named by the settings (no server needed).

Also home of `open_store()` and `run_in_store()`, which the other tenancy commands (keys, projects, usage) use to
reach the database directly, like Django's manage.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from sqlalchemy.orm import Session

from llmaas import services
from llmaas.config import load_settings
from llmaas.errors import LlmaasError
from llmaas.store.db import Store

T = TypeVar("T")

config_option = click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
    help="YAML/TOML settings file (environment LLMAAS_* still applies).",
)  # fmt: skip


def open_store(config_file: str | None, *, upgrade: bool = True) -> Store:
    """The Store of this settings file (`services.open_store`), migrated to the latest revision."""
    return services.open_store(load_settings(config_file), upgrade=upgrade)


def run_in_store(config_file: str | None, work: Callable[[Session], T]) -> T:
    """`work` in one session (committed when it returns); a client error is a one-line message, not a traceback."""
    store = open_store(config_file)
    try:
        with store.session() as s:
            return work(s)
    except (LlmaasError, ValueError) as exc:  # e.g. no such project, a malformed project id
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc
    finally:
        store.close()


@click.group("db")
def db() -> None:
    """Database schema (SQLite by default, PostgreSQL with LLMAAS_DATABASE_URL)."""


@db.command("upgrade")
@config_option
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
def upgrade(config_file: str | None, revision: str) -> None:
    """Apply pending migrations (`llmaas serve` also does this at start)."""
    store = open_store(config_file, upgrade=False)
    try:
        store.upgrade(revision)
        click.echo(f"{store.display_url} is at revision {store.current_revision()}")
    finally:
        store.close()


@db.command("current")
@config_option
def current(config_file: str | None) -> None:
    """Print the database's current revision."""
    store = open_store(config_file, upgrade=False)
    try:
        click.echo(store.current_revision() or "(empty: run `llmaas db upgrade`)")
    finally:
        store.close()


def register(cli: click.Group) -> None:
    cli.add_command(db)
