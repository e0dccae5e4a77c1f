"""`llmaas usage`: requests and tokens per model, key or day, read straight from the database."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import click
from sqlalchemy.orm import Session

from llmaas.cli.db import config_option, run_in_store
from llmaas.store import tenancy as tenancy_db


def _when(value: str | None) -> int | None:
    """Unix seconds, or an ISO date/time (UTC when no zone is given)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: give unix seconds or an ISO date (2026-11-01)") from exc
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp())


@click.command("usage")
@config_option
@click.option("--project", "project_id", default="default", show_default=True, help="Project to report.")
@click.option("--group-by", type=click.Choice(["model", "key", "day"]), default="model", show_default=True)
@click.option("--start", default=None, help="From (unix seconds or ISO date, inclusive).")
@click.option("--end", default=None, help="Until (unix seconds or ISO date, exclusive).")
@click.option("--json", "as_json", is_flag=True, help="JSON output (the shape of GET /v1/usage).")
def usage(config_file: str | None, project_id: str, group_by: str, start: str | None, end: str | None,
          as_json: bool) -> None:  # fmt: skip
    """Show metered usage of a project."""
    since, until = _when(start), _when(end)

    def work(s: Session) -> list[dict[str, Any]]:
        tenancy_db.get_project(s, project_id=project_id)  # an unknown project is an error, not an empty report
        return tenancy_db.usage_summary(s, project_id=project_id, start=since, end=until, group_by=group_by)

    rows = run_in_store(config_file, work)
    if as_json:
        click.echo(json.dumps({"object": "list", "data": rows}, indent=2))
        return
    click.echo(f"{group_by:<40} {'requests':>10} {'prompt':>12} {'completion':>12} {'total':>12}")
    for r in rows:
        click.echo(f"{str(r['group'])[:40]:<40} {r['requests']:>10} {r['prompt_tokens']:>12} "
                   f"{r['completion_tokens']:>12} {r['total_tokens']:>12}")  # fmt: skip


def register(cli: click.Group) -> None:
    cli.add_command(usage)
