"""`llmaas projects create|list|show|set-limits`: manage tenants directly in the database (no server needed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from llmaas.api.protocol.admin import ProjectObject
from llmaas.cli.db import config_option, run_in_store
from llmaas.store import tenancy as tenancy_db


class _LimitType(click.ParamType):
    """A positive integer, or `none` to remove the limit."""

    name = "N|none"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, int) or value is None:
            return value
        if str(value).lower() == "none":
            return "none"
        try:
            n = int(value)
        except ValueError:
            self.fail(f"{value!r} is not an integer or 'none'", param, ctx)
        if n < 0:
            self.fail("limits are >= 0", param, ctx)
        return n


LIMIT = _LimitType()


def limit_options(removed: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--rpm/--tpm/--budget, each an integer or `none` (`removed` says what `none` leaves in force)."""

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        for flag, what in (
            ("--budget", "Monthly token budget"),
            ("--tpm", "Tokens per minute"),
            ("--rpm", "Requests per minute"),
        ):
            f = click.option(flag, type=LIMIT, default=None, help=f"{what} ('none': {removed}).")(f)
        return f

    return wrap


def limit_changes(rpm: Any, tpm: Any, budget: Any) -> dict[str, int | None]:
    """The limits given on the command line: a number sets, `none` removes, an absent option leaves as is."""
    given = {"rpm": rpm, "tpm": tpm, "monthly_token_budget": budget}
    return {k: (None if v == "none" else v) for k, v in given.items() if v is not None}


def _show(p: ProjectObject) -> None:
    click.echo(json.dumps(p.model_dump(), indent=2))


@click.group("projects")
def projects() -> None:
    """Projects (tenants): each sees only its own keys, files, jobs, models and usage."""


@projects.command("create")
@config_option
@click.argument("project_id")
@click.option("--name", default=None, help="Display name (default: the id).")
@click.option("--rpm", type=click.IntRange(1), default=None, help="Requests per minute, whole project.")
@click.option("--tpm", type=click.IntRange(1), default=None, help="Tokens per minute, whole project.")
@click.option("--budget", type=click.IntRange(0), default=None, help="Monthly token budget, whole project.")
def create(config_file: str | None, project_id: str, name: str | None, rpm: int | None, tpm: int | None,
           budget: int | None) -> None:  # fmt: skip
    """Create a project."""
    _show(run_in_store(config_file, lambda s: ProjectObject.of(tenancy_db.create_project(
        s, project_id=project_id, name=name or project_id, rpm=rpm, tpm=tpm, monthly_token_budget=budget))))  # fmt: skip


@projects.command("list")
@config_option
def list_(config_file: str | None) -> None:
    """List projects and their limits."""
    for p in run_in_store(config_file, lambda s: [ProjectObject.of(row) for row in tenancy_db.list_projects(s)]):
        click.echo(f"{p.id}  {p.name}  rpm={p.rpm} tpm={p.tpm} budget={p.monthly_token_budget}")


@projects.command("show")
@config_option
@click.argument("project_id")
def show(config_file: str | None, project_id: str) -> None:
    """Show one project."""
    _show(run_in_store(config_file, lambda s: ProjectObject.of(tenancy_db.get_project(s, project_id=project_id))))


@projects.command("set-limits")
@config_option
@click.argument("project_id")
@limit_options("no limit")
def set_limits(config_file: str | None, project_id: str, rpm: Any, tpm: Any, budget: Any) -> None:
    """Set or remove a project's limits (running servers pick them up within 1 s)."""
    changes = limit_changes(rpm, tpm, budget)
    _show(
        run_in_store(
            config_file, lambda s: ProjectObject.of(tenancy_db.update_project(s, project_id=project_id, **changes))
        )
    )


def register(cli: click.Group) -> None:
    cli.add_command(projects)
