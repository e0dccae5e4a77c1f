"""The `llmaas` command line: one click group; each command group lives in its own module here."""

from __future__ import annotations

import click

from llmaas import __version__
from llmaas.cli import batches, chat, db, finetune, keys, models, projects, serve, usage, worker


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmaas")
def cli() -> None:
    """llmaas: a self-hosted LLM as a Service (OpenAI-compatible API, LoRA fine-tuning, per-tenant metering)."""


# Each module adds its commands with `register(cli)`; a new group adds its module to the import and a line here.
serve.register(cli)
models.register(cli)
chat.register(cli)
worker.register(cli)
keys.register(cli)
projects.register(cli)
usage.register(cli)
finetune.register(cli)
batches.register(cli)
db.register(cli)


def main() -> None:
    cli(prog_name="llmaas")
