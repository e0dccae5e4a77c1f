"""`llmaas finetune`: fine-tune through a running server's OpenAI API (upload + create, watch, list, cancel)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from llmaas.cli._client import Api, add_watch_and_cancel, connection_options

FINISHED = ("succeeded", "failed", "cancelled")


@click.group()
def finetune() -> None:
    """Fine-tune LoRA adapters on a running server (POST /v1/files + /v1/fine_tuning/jobs)."""


@finetune.command()
@connection_options
@click.option(
    "--file",
    "train_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Training JSONL (chat or prompt/completion).",
)
@click.option(
    "--validation-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Validation JSONL.",
)
@click.option("--model", required=True, help="Base chat model served by the server.")
@click.option("--suffix", default=None, help="Up to 64 characters in the fine-tuned model's name.")
@click.option("--epochs", type=int, default=None, help="n_epochs (default auto).")
@click.option("--batch-size", type=int, default=None, help="batch_size (default auto).")
@click.option("--lr-multiplier", type=float, default=None, help="learning_rate_multiplier (default auto).")
@click.option("--rank", type=int, default=None, help="LoRA rank (extension).")
@click.option("--seed", type=int, default=None)
@click.option("--watch/--no-watch", default=False, help="Follow the job until it finishes.")
def create(
    base_url: str | None,
    api_key: str | None,
    train_file: Path,
    validation_file: Path | None,
    model: str,
    suffix: str | None,
    epochs: int | None,
    batch_size: int | None,
    lr_multiplier: float | None,
    rank: int | None,
    seed: int | None,
    watch: bool,
) -> None:
    """Upload the file(s) and create a fine-tuning job; prints the job id."""
    api = Api(base_url, api_key)
    body: dict[str, Any] = {"model": model, "training_file": api.upload(train_file)["id"]}
    if validation_file:
        body["validation_file"] = api.upload(validation_file)["id"]
    hp = {
        k: v
        for k, v in {"n_epochs": epochs, "batch_size": batch_size, "learning_rate_multiplier": lr_multiplier}.items()
        if v is not None
    }
    method: dict[str, Any] = {"type": "supervised", "supervised": {"hyperparameters": hp}}
    if rank is not None:
        method["lora"] = {"rank": rank, "alpha": 2 * rank}
    body.update(method=method, **{k: v for k, v in {"suffix": suffix, "seed": seed}.items() if v is not None})
    job = api.call("POST", "/fine_tuning/jobs", json=body)
    click.echo(job["id"])
    if watch:
        _watch(api, job["id"])


def _watch(api: Api, job_id: str, poll_s: float = 1.0) -> None:
    seen: set[str] = set()
    bar: Any = None
    while True:
        events = api.call("GET", f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100})["data"]
        for ev in reversed(events):
            if ev["id"] in seen:
                continue
            seen.add(ev["id"])
            data = ev.get("data") or {}
            if "total_steps" in data:
                if bar is None:
                    bar = click.progressbar(length=data["total_steps"], label="training", show_pos=True)
                    bar.__enter__()
                bar.label = f"epoch {data['epoch']} loss {data['train_loss']:.4f}"
                bar.update(data["step"] - bar.pos)
            elif bar is None or ev["type"] != "metrics":
                click.echo(f"\n{ev['message']}" if bar is not None else ev["message"])
        job = api.call("GET", f"/fine_tuning/jobs/{job_id}")
        if job["status"] in FINISHED:
            if bar is not None:
                bar.__exit__(None, None, None)
            click.echo(f"status: {job['status']}")
            if job["fine_tuned_model"]:
                click.echo(f"fine_tuned_model: {job['fine_tuned_model']}")
            if job["error"]:
                raise click.ClickException(job["error"]["message"])
            return
        time.sleep(poll_s)


@finetune.command("list")
@connection_options
@click.option("--limit", type=int, default=20)
def list_cmd(base_url: str | None, api_key: str | None, limit: int) -> None:
    """List fine-tuning jobs, newest first."""
    for job in Api(base_url, api_key).call("GET", "/fine_tuning/jobs", params={"limit": limit})["data"]:
        click.echo(f"{job['id']}\t{job['status']}\t{job['model']}\t{job['fine_tuned_model'] or ''}")


add_watch_and_cancel(
    finetune,
    path="/fine_tuning/jobs",
    argument="job_id",
    follow=_watch,
    watch_help="Follow a job: a progress bar with the live training loss, until it finishes.",
    cancel_help="Cancel a job (a running one stops within seconds).",
)


def register(cli: click.Group) -> None:
    cli.add_command(finetune)
