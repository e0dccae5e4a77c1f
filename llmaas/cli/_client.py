"""What the client-side commands (models, chat) share: where the server is and how to call it."""

from __future__ import annotations

import os
from collections.abc import Callable
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
    f = click.option("--base-url", envvar="LLMAAS_BASE_URL", default=None, help=f"Server URL (env LLMAAS_BASE_URL; default {DEFAULT_BASE_URL}).")(f)
    return f
