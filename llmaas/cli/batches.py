"""`llmaas batches`: the Batch API through a running server (upload + create, watch, download, list, cancel)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from llmaas.cli._client import Api, add_watch_and_cancel, connection_options

FINISHED = ("completed", "failed", "expired", "cancelled")
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")


@click.group()
def batches() -> None:
    """Run large offline jobs at low priority (POST /v1/files + /v1/batches); results come back as JSONL files."""


@batches.command()
@connection_options
@click.option(
    "--file",
    "input_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help='Input JSONL: one {"custom_id", "method": "POST", "url", "body"} per line.',
)
@click.option("--endpoint", type=click.Choice(ENDPOINTS), default=None, help="Default: the first line's url.")
@click.option("--metadata", "metadata", multiple=True, metavar="KEY=VALUE", help="Attach metadata (repeatable).")
@click.option("--watch/--no-watch", default=False, help="Follow the batch until it finishes.")
def create(
    base_url: str | None,
    api_key: str | None,
    input_file: Path,
    endpoint: str | None,
    metadata: tuple[str, ...],
    watch: bool,
) -> None:
    """Upload the input file and create a batch; prints the batch id."""
    import json

    if endpoint is None:
        with input_file.open("rb") as f:
            first = next((line for line in f if line.strip()), b"{}")
        try:
            endpoint = str(json.loads(first).get("url") or "")
        except (ValueError, AttributeError):
            endpoint = ""
        if endpoint not in ENDPOINTS:
            raise click.UsageError("cannot tell the endpoint from the first line; pass --endpoint")
    meta = dict(item.split("=", 1) for item in metadata if "=" in item)
    api = Api(base_url, api_key)
    body: dict[str, Any] = {
        "input_file_id": api.upload(input_file, "batch")["id"],
        "endpoint": endpoint,
        "completion_window": "24h",
    }
    if meta:
        body["metadata"] = meta
    batch = api.call("POST", "/batches", json=body)
    click.echo(batch["id"])
    if watch:
        _watch(api, batch["id"])


def _watch(api: Api, batch_id: str, poll_s: float = 1.0) -> None:
    batch = api.call("GET", f"/batches/{batch_id}")
    with click.progressbar(
        length=max(1, batch["request_counts"]["total"]), label=batch["status"], show_pos=True
    ) as bar:
        while True:
            counts = batch["request_counts"]
            bar.label = f"{batch['status']} ({counts['failed']} failed)"
            bar.update(counts["completed"] + counts["failed"] - bar.pos)
            if batch["status"] in FINISHED:
                break
            time.sleep(poll_s)
            batch = api.call("GET", f"/batches/{batch_id}")
    click.echo(f"status: {batch['status']}")
    for name in ("output_file_id", "error_file_id"):
        if batch[name]:
            click.echo(f"{name}: {batch[name]}")
    for error in (batch.get("errors") or {}).get("data", []):
        click.echo(f"error (line {error.get('line')}): {error['message']}", err=True)
    if batch["status"] == "failed":
        raise click.ClickException("the batch failed")


@batches.command()
@connection_options
@click.argument("batch_id")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write here (default stdout)."
)
@click.option("--errors", "which", flag_value="error_file_id", help="The error file instead of the output file.")
@click.option("--results", "which", flag_value="output_file_id", default=True, help="The output file (default).")
def download(base_url: str | None, api_key: str | None, batch_id: str, output: Path | None, which: str) -> None:
    """Download a batch's output (or error) file: one JSON line per request."""
    api = Api(base_url, api_key)
    file_id = api.call("GET", f"/batches/{batch_id}")[which]
    if not file_id:
        raise click.ClickException(f"the batch has no {'error' if which == 'error_file_id' else 'output'} file (yet)")
    if output is None:
        api.download(f"/files/{file_id}/content", sys.stdout.buffer)
        return
    with output.open("wb") as f:
        api.download(f"/files/{file_id}/content", f)
    click.echo(f"wrote {output}", err=True)


@batches.command("list")
@connection_options
@click.option("--limit", type=int, default=20)
def list_cmd(base_url: str | None, api_key: str | None, limit: int) -> None:
    """List batches, newest first."""
    for b in Api(base_url, api_key).call("GET", "/batches", params={"limit": limit})["data"]:
        c = b["request_counts"]
        click.echo(f"{b['id']}\t{b['status']}\t{b['endpoint']}\t{c['completed']}+{c['failed']}/{c['total']}")


add_watch_and_cancel(
    batches,
    path="/batches",
    argument="batch_id",
    follow=_watch,
    watch_help="Follow a batch: a progress bar of its lines, until it finishes.",
    cancel_help="Cancel a batch (it stops within seconds, keeping the lines that finished).",
)


def register(cli: click.Group) -> None:
    cli.add_command(batches)
