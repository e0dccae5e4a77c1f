"""`llmaas keys create|list|set-limits|revoke`: manage API keys directly in the database (no server needed).

`create` prints the secret once, on stdout alone (so `KEY=$(llmaas keys create …)` works); it is never stored.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from llmaas.api.protocol.admin import ApiKeyObject
from llmaas.cli.db import config_option, open_store, run_in_store
from llmaas.cli.projects import limit_changes, limit_options
from llmaas.errors import LlmaasError
from llmaas.store import tenancy as tenancy_db
from llmaas.tenancy import keys as tenancy_keys


@click.group("keys")
def keys() -> None:
    """API keys: shown once at creation, stored hashed, revocable."""


@keys.command("create")
@config_option
@click.option("--project", "project_id", default="default", show_default=True, help="Project the key belongs to.")
@click.option("--name", default="cli", show_default=True, help="Display name.")
@click.option("--admin", "is_admin", is_flag=True, help="An admin key (may use /admin and see every project).")
@click.option("--models", default=None, help="Comma-separated models this key may use (default: all).")
@click.option("--expires-in-days", type=click.FloatRange(min=0, min_open=True), default=None, help="Expiry.")
@click.option("--rpm", type=click.IntRange(1), default=None, help="Requests per minute for this key.")
@click.option("--tpm", type=click.IntRange(1), default=None, help="Tokens per minute for this key.")
@click.option("--budget", type=click.IntRange(0), default=None, help="Monthly token budget for this key.")
def create(
    config_file: str | None, project_id: str, name: str, is_admin: bool, models: str | None,
    expires_in_days: float | None, rpm: int | None, tpm: int | None, budget: int | None,
) -> None:  # fmt: skip
    """Create a key and print its secret (the only time it is shown)."""
    store = open_store(config_file)
    try:
        row, secret = tenancy_keys.create_key(
            store, project_id=project_id, name=name, is_admin=is_admin,
            models=[m.strip() for m in models.split(",") if m.strip()] if models else None,
            expires_at=int(time.time() + expires_in_days * 86400) if expires_in_days else None,
            rpm=rpm, tpm=tpm, monthly_token_budget=budget,
        )  # fmt: skip
    except LlmaasError as exc:  # e.g. no such project: a message, not a traceback
        raise click.ClickException(exc.message) from exc
    finally:
        store.close()
    click.echo(f"Created {'admin ' if is_admin else ''}key {row.id} in project {project_id}; "
               "store the secret now, it is not shown again:", err=True)  # fmt: skip
    click.echo(secret)


@keys.command("list")
@config_option
@click.option("--project", "project_id", default=None, help="Only this project's keys.")
@click.option("--json", "as_json", is_flag=True, help="JSON output.")
def list_(config_file: str | None, project_id: str | None, as_json: bool) -> None:
    """List keys (prefix, project, flags); never secrets."""
    rows: list[dict[str, Any]] = run_in_store(
        config_file, lambda s: [ApiKeyObject.of(k).model_dump() for k in tenancy_db.list_keys(s, project_id=project_id)]
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for k in rows:
        state = (
            "revoked"
            if k["revoked_at"]
            else ("expired" if k["expires_at"] and k["expires_at"] <= time.time() else "active")
        )
        flags = ",".join(f for f in ["admin" if k["is_admin"] else "", state] if f)
        click.echo(f"{k['id']}  {k['prefix']}…  {k['project_id']}  {k['name']}  [{flags}]")


@keys.command("set-limits")
@config_option
@click.argument("key_id")
@limit_options("only the project's limit applies")
def set_limits(config_file: str | None, key_id: str, rpm: Any, tpm: Any, budget: Any) -> None:
    """Set or remove a key's own limits (running servers pick them up within 1 s)."""
    changes = limit_changes(rpm, tpm, budget)
    row = run_in_store(
        config_file, lambda s: ApiKeyObject.of(tenancy_db.update_key(s, key_id=key_id, **changes)).model_dump()
    )
    click.echo(json.dumps(row, indent=2))


@keys.command("revoke")
@config_option
@click.argument("key_id")
def revoke(config_file: str | None, key_id: str) -> None:
    """Revoke a key (running servers stop accepting it within 1 s)."""
    run_in_store(config_file, lambda s: tenancy_db.revoke_key(s, key_id=key_id))
    click.echo(f"Revoked {key_id}")


def register(cli: click.Group) -> None:
    cli.add_command(keys)
