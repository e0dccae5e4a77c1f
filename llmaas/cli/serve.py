"""`llmaas serve`: run the OpenAI-compatible server (defaults need no configuration)."""

from __future__ import annotations

from pathlib import Path

import click

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def parse_model_flag(value: str) -> tuple[str, str]:
    """NAME=SOURCE, or just SOURCE (the name is the folder/file name)."""
    name, sep, source = value.partition("=")
    if not sep:
        source = value
        name = Path(value.rstrip("/")).stem or value
    if not name or not source:
        raise click.BadParameter(f"expected NAME=SOURCE, got {value!r}", param_hint="--model")
    return name, source


@click.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 8000; 0 = any free port).")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML/TOML settings file.",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME=SOURCE",
    help="Serve this chat model (repeatable); replaces the configured chat models. SOURCE: builtin:smollm2, an HF folder or a .gguf file.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where state, files and adapters live (default ~/.llmaas).",
)
@click.option("--no-auth", is_flag=True, help="Serve without API keys (local single-user use only).")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
    default=None,
    help="Weights dtype of the chat models (the default one, --model ones or the configured ones); auto = bfloat16 where the CPU computes it natively, float32 otherwise.",
)
@click.option("--no-worker", is_flag=True, help="Do not start a fine-tuning worker in this process group.")
def serve(
    host: str | None,
    port: int | None,
    config_file: str | None,
    models: tuple[str, ...],
    dtype: str | None,
    data_dir: str | None,
    no_auth: bool,
    no_worker: bool,
) -> None:
    """Serve the OpenAI-compatible API: chat, completions, embeddings, models (and fine-tuning, keys, usage).

    With no options: SmolLM2-135M-Instruct and all-MiniLM-L6-v2 on http://127.0.0.1:8000, state in ~/.llmaas.
    """
    from llmaas.config import ModelSpec, load_settings
    from llmaas.server import run

    overrides = dict(
        host=host,
        port=port,
        data_dir=data_dir,
        auth=False if no_auth else None,
        start_worker=False if no_worker else None,
    )
    try:
        settings = load_settings(config_file, **overrides)
        if models or dtype:
            chat = (
                [ModelSpec(name=n, source=s, kind="chat") for n, s in map(parse_model_flag, models)]
                if models
                else settings.chat_models
            )
            if dtype:
                chat = [m.model_copy(update={"dtype": dtype}) for m in chat]
            specs = [m.model_dump() for m in chat + settings.embedding_models]
            settings = load_settings(config_file, **overrides, models=specs)
    except (ValueError, OSError) as exc:
        raise click.UsageError(str(exc)) from exc
    if not settings.auth:
        exposed = "" if settings.host in LOOPBACK else f" ON {settings.host}, REACHABLE FROM OTHER MACHINES"
        click.secho(
            f"WARNING: authentication is OFF (--no-auth){exposed}: anyone who can connect can use every model, "
            "endpoint and admin route.",
            fg="red",
            bold=True,
            err=True,
        )
    run(settings)


def register(cli: click.Group) -> None:
    cli.add_command(serve)
