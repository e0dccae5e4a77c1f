"""Regenerates the reference blocks of docs/ from the code, so they cannot drift: `python docs/generate.py`.

Blocks between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->` are replaced; the prose around
them is hand-written. Blocks: settings (config.py), cli (the click group), metrics (metrics.py), errors (errors.py).
`python docs/generate.py --check` exits 1 when a block is stale (tests/test_docs.py checks names, not freshness).
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent


def settings_block() -> str:
    from llmaas.config import Limits, ModelSpec, Settings

    out = ["| Setting | Environment | Type | Default | Description |", "| --- | --- | --- | --- | --- |"]
    for name, f in Settings.model_fields.items():
        env = f"`LLMAAS_{name.upper()}`"
        out.append(f"| `{name}` | {env} | {_type(f.annotation)} | {_default(f)} | {_desc(f)} |")
    out += ["", "**`models[]`** — one entry per served model (`ModelSpec`):", ""]
    out += ["| Key | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for name, f in ModelSpec.model_fields.items():
        out.append(f"| `{name}` | {_type(f.annotation)} | {_default(f)} | {_desc(f)} |")
    out += ["", "**`limits`** — bounds on one request (`Limits`; env `LLMAAS_LIMITS__<KEY>`):", ""]
    out += ["| Key | Type | Default | Bounds | Description |", "| --- | --- | --- | --- | --- |"]
    for name, f in Limits.model_fields.items():
        out.append(f"| `{name}` | {_type(f.annotation)} | {_default(f)} | {_bounds(f)} | {_desc(f)} |")
    return "\n".join(out)


def cli_block() -> str:
    import click

    from llmaas.cli import cli

    out: list[str] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        ctx = click.Context(cmd, info_name=" ".join(path))
        if len(path) > 1:
            out.append(f"### `{' '.join(path)}`\n")
            out.append("```text\n" + cmd.get_help(ctx).strip() + "\n```\n")
        if isinstance(cmd, click.Group):
            for name in sorted(cmd.commands):
                walk(cmd.commands[name], path + [name])

    walk(cli, ["llmaas"])
    return "\n".join(out).strip()


def metrics_block() -> str:
    from llmaas import metrics

    helps: dict[str, tuple[str, str, str]] = {}
    for m in (
        metrics.REQUESTS, metrics.REQUEST_DURATION, metrics.TIME_TO_FIRST_TOKEN, metrics.INTER_TOKEN_LATENCY,
        metrics.PROMPT_TOKENS, metrics.COMPLETION_TOKENS, metrics.RATE_LIMIT_REJECTIONS,
        metrics.BATCH_LINES_RUNNING, metrics.BATCH_LINES_DONE,
    ):  # fmt: skip
        kind = type(m).__name__.lower()
        name = m._name + ("_total" if kind == "counter" else "")
        helps[name] = (kind, ", ".join(f"`{x}`" for x in m._labelnames), m._documentation)
    for name, doc in metrics.ENGINE_GAUGES.items():
        helps[name] = ("gauge", "`model`", doc)
    for name, doc in metrics.ENGINE_COUNTERS.items():
        helps[name] = ("counter", "`model`", doc)
    helps[metrics.FINE_TUNING_JOBS] = (
        "gauge",
        "`status`",
        "Fine-tuning jobs in the store, by status (read at scrape time).",
    )
    helps[metrics.BATCH_LINES_QUEUED] = (
        "gauge",
        "",
        "Batch API lines not yet run, over every unfinished batch (read at scrape time).",
    )
    out = ["| Metric | Type | Labels | Meaning |", "| --- | --- | --- | --- |"]
    for name in metrics.metric_names():
        kind, labels, doc = helps[name]
        out.append(f"| `{name}` | {kind} | {labels} | {doc} |")
    return "\n".join(out)


# What a client did to get each error class, where the class has no docstring of its own.
ERROR_WHEN = {
    "LlmaasError": "An unexpected server error (the message is generic; the traceback is only in the server log).",
    "InvalidRequest": "A field is missing, malformed or out of bounds (`param` names it).",
    "ContextLengthExceeded": "Prompt plus `max_tokens` does not fit the model's context length.",
    "Unauthenticated": "No key, an unknown, revoked or expired key.",
    "PermissionDenied": "The key may not do this (an admin route, a model outside the key's list).",
    "NotFound": "No such object in the caller's project (another project's objects are not found either).",
    "ModelNotFound": "No such model for this caller.",
    "Conflict": "The object's state forbids it (cancelling a finished job, a duplicate id).",
    "PayloadTooLarge": "The body or upload exceeds `limits.max_body_bytes` / `limits.max_upload_bytes`.",
    "RateLimited": "Requests or tokens per minute of the key or project exhausted, or the key's not-found allowance (`limits.max_not_found_per_minute`); `Retry-After` says when to retry.",
    "RequestTooLarge": "The request alone reserves more tokens (prompt + `max_tokens` × `n`) than a tokens-per-minute limit allows; no retry can help.",
    "QuotaExceeded": "The monthly token budget of the key or project is spent; `Retry-After` is the start of next month.",
    "Overloaded": "The engine's waiting queue is full (backpressure); `Retry-After` says when to retry. Not billed.",
    "Unavailable": "The server is starting or shutting down, or a dependency (database) is unreachable.",
}


def errors_block() -> str:
    from llmaas import errors

    out = ["| Code | HTTP status | `type` | Raised as | When |", "| --- | --- | --- | --- | --- |"]
    for name, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.LlmaasError) and cls.__module__ == errors.__name__:
            doc = ERROR_WHEN.get(name) or (cls.__doc__ or "").strip().split("\n")[0]
            code = f"`{cls.code}`" if cls.code else "(none)"
            out.append(f"| {code} | {cls.status} | `{cls.type}` | `{name}` | {doc} |")
    return "\n".join(out)


BLOCKS = {"settings": settings_block, "cli": cli_block, "metrics": metrics_block, "errors": errors_block}


def _type(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "").replace("pathlib.", "")
    text = re.sub(r"llmaas\.config\.", "", text)
    return text.replace("|", "\\|")


def _default(f: Any) -> str:
    if f.default_factory is not None:
        value = f.default_factory()
        if isinstance(value, list) and value and hasattr(value[0], "name"):
            return "the two default models"
        if hasattr(value, "model_dump"):
            return "see below"
        return f"`{value!r}`"
    if f.is_required():
        return "required"
    if isinstance(f.default, Path):
        return f"`{str(f.default)!r}`"
    return f"`{f.default!r}`" if f.default is not None else "unset"


def _bounds(f: Any) -> str:
    parts = []
    for m in f.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(parts) or "—"


def _desc(f: Any) -> str:
    return (f.description or "").replace("|", "\\|").replace("\n", " ")


def regenerate(check: bool = False) -> list[str]:
    """Rewrite every generated block in docs/*.md; returns the files that changed (or would change)."""
    changed = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        new = text
        for name, fn in BLOCKS.items():
            pattern = re.compile(
                rf"(<!-- BEGIN GENERATED: {name} -->\n).*?(<!-- END GENERATED: {name} -->)", flags=re.S
            )
            if pattern.search(new):
                block = fn()
                new = pattern.sub(lambda m, block=block: m.group(1) + block + "\n" + m.group(2), new)
        if new != text:
            changed.append(path.name)
            if not check:
                path.write_text(new)
    return changed


if __name__ == "__main__":
    check = "--check" in sys.argv
    files = regenerate(check=check)
    print(("stale: " if check else "regenerated: ") + (", ".join(files) or "nothing"))
    sys.exit(1 if check and files else 0)
