"""`llmaas chat`: talk to a running server in the terminal (streaming, keeps the conversation, /exit to leave)."""

from __future__ import annotations

import json
from typing import Any

import click

from llmaas.cli._client import api_base, connection_options, error_text, headers

HELP_LINE = "Type a message; /reset forgets the conversation, /exit (or Ctrl-D) leaves."


def first_chat_model(client: Any, base: str) -> str:
    response = client.get(base + "/models")
    if response.status_code != 200:
        raise click.ClickException(error_text(response))
    for m in response.json()["data"]:
        if m.get("kind", "chat") == "chat":
            return str(m["id"])
    raise click.ClickException("the server offers no chat model")


def stream_reply(client: Any, base: str, body: dict[str, Any]) -> str:
    """POST a streaming chat completion, print the deltas as they come, return the whole reply."""
    parts: list[str] = []
    with client.stream("POST", base + "/chat/completions", json=body) as response:
        if response.status_code != 200:
            response.read()
            raise click.ClickException(error_text(response))
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise click.ClickException(chunk["error"].get("message", "error"))
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content") or ""
                parts.append(text)
                click.echo(text, nl=False)
    click.echo()
    return "".join(parts)


@click.command()
@connection_options
@click.option("--model", default=None, help="Model id (default: the server's first chat model).")
@click.option("--system", default=None, help="A system message to start the conversation with.")
@click.option("--temperature", type=float, default=None, help="Sampling temperature (0 = greedy).")
@click.option("--max-tokens", type=int, default=None, help="Most tokens per reply.")
def chat(
    base_url: str | None,
    api_key: str | None,
    model: str | None,
    system: str | None,
    temperature: float | None,
    max_tokens: int | None,
) -> None:
    """Chat with a model on a running server. Replies stream as they are generated."""
    import httpx

    base = api_base(base_url)
    with httpx.Client(headers=headers(api_key), timeout=httpx.Timeout(600, connect=10)) as client:
        try:
            model = model or first_chat_model(client, base)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"cannot reach {base}: {exc}") from exc
        click.echo(f"Chatting with {model}. {HELP_LINE}")
        history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
        while True:
            try:
                line = input("you> ")
            except (EOFError, KeyboardInterrupt):
                click.echo()
                return
            text = line.strip()
            if text in ("/exit", "/quit"):
                return
            if text == "/reset":
                history = history[:1] if system else []
                click.echo("(conversation cleared)")
                continue
            if not text:
                continue
            history.append({"role": "user", "content": line})
            body: dict[str, Any] = {"model": model, "messages": history, "stream": True}
            if temperature is not None:
                body["temperature"] = temperature
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            click.echo(f"{model}> ", nl=False)
            try:
                reply = stream_reply(client, base, body)
            except (httpx.HTTPError, click.ClickException) as exc:
                history.pop()
                message = exc.message if isinstance(exc, click.ClickException) else str(exc)
                click.echo(f"\nerror: {message}", err=True)
                continue
            history.append({"role": "assistant", "content": reply})


def register(cli: click.Group) -> None:
    cli.add_command(chat)
