"""The `llmaas` command line: one click group; each command group lives in its own module here."""

from __future__ import annotations

import importlib

import click

from llmaas import __version__

# Modules that add commands to `cli` (each defines `register(cli)`); listed once so `--help` shows them all.
COMMAND_MODULES = ["serve", "models", "chat", "worker", "keys", "projects", "usage", "finetune", "batches", "db"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmaas")
def cli() -> None:
    """llmaas: a self-hosted LLM as a Service (OpenAI-compatible API, LoRA fine-tuning, per-tenant metering)."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"llmaas.cli.{_name}")
    except ModuleNotFoundError as exc:  # a command group not written yet
        if exc.name != f"llmaas.cli.{_name}":
            raise
        continue
    _module.register(cli)


def main() -> None:
    cli(prog_name="llmaas")
