"""What the client-side commands (models, chat, finetune, batches) share: where the server is, how to call it, and
the `watch` / `cancel` commands of a resource that runs on the server (a fine-tuning job, a batch)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


def api_base(base_url: str | None) -> str:
    """The /v1 root: accepts http://host:port or http://host:port/v1."""
    url = (base_url or os.environ.get("LLMAAS_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def error_text(response: Any) -> str:
    """The server's OpenAI error message, or the status line."""
    try:
        return str(response.json()["error"]["message"])
    except Exception:  # noqa: BLE001 - not our server, or not JSON
        return f"HTTP {response.status_code}"


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--api-key", envvar="LLMAAS_API_KEY", default=None, help="API key (env LLMAAS_API_KEY).")(f)
    f = click.option(
        "--base-url",
        envvar="LLMAAS_BASE_URL",
        default=None,
        help=f"Server URL (env LLMAAS_BASE_URL; default {DEFAULT_BASE_URL}).",
    )(f)
    return f


class Api:
    def __init__(self, base_url: str | None, api_key: str | None) -> None:
        import httpx

        self.base = api_base(base_url)
        self.http = httpx.Client(headers=headers(api_key), timeout=120)

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        import httpx

        try:
            response = self.http.request(method, self.base + path, **kw)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {self.base}: {exc}") from exc
        if response.status_code != 200:
            raise click.ClickException(error_text(response))
        return response.json()

    def upload(self, path: Path, purpose: str = "fine-tune") -> dict[str, Any]:
        with path.open("rb") as f:
            return self.call(
                "POST", "/files", files={"file": (path.name, f, "application/jsonl")}, data={"purpose": purpose}
            )

    def download(self, path: str, out: Any) -> None:
        """Stream a response body (a file's content) into `out`."""
        import httpx

        try:
            with self.http.stream("GET", self.base + path) as response:
                if response.status_code != 200:
                    response.read()
                    raise click.ClickException(error_text(response))
                for chunk in response.iter_bytes():
                    out.write(chunk)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {self.base}: {exc}") from exc


def add_watch_and_cancel(
    group: click.Group,
    *,
    path: str,
    argument: str,
    follow: Callable[[Api, str], None],
    watch_help: str,
    cancel_help: str,
) -> None:
    """Add `watch ID` (`follow(api, id)` until it finishes) and `cancel ID` (POST `{path}/{id}/cancel`, print the
    status) to `group`; `argument` names the id (`job_id`, `batch_id`)."""

    @group.command("watch", help=watch_help)
    @connection_options
    @click.argument(argument)
    def watch_cmd(base_url: str | None, api_key: str | None, **ids: str) -> None:
        follow(Api(base_url, api_key), ids[argument])

    @group.command("cancel", help=cancel_help)
    @connection_options
    @click.argument(argument)
    def cancel_cmd(base_url: str | None, api_key: str | None, **ids: str) -> None:
        click.echo(Api(base_url, api_key).call("POST", f"{path}/{ids[argument]}/cancel")["status"])
