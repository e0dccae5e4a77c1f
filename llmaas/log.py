"""Logging for llmaas: JSON or plain lines, each carrying the request id of the request being served.

What this is: `configure_logging(settings)`, the per-request context (a contextvar holding a small mutable
`RequestContext` that the middleware creates and the meter/auth fill in), request-id sanitizing, and `content()`,
the one gate through which prompts and completions may reach a log. What it isn't: the access-log writer (the
middleware calls `access()` here) or a place that ever sees an API key (only `key_prefix`, a display prefix).

Prompts, completions and keys are never logged unless `settings.log_content` (which config refuses outside dev).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

# --- request context ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestContext:
    """What the logs and metrics know about the request being served. Mutable: code deeper in the stack fills it in
    (contextvars set in a child task do not flow back to the middleware, but mutations of this object do)."""

    request_id: str
    model: str | None = None  # the client's model name; only ever a log field, a metric label goes through model_label
    key_prefix: str | None = None  # display prefix of the API key, never the secret
    rate_limited: bool = False  # a 429 was already counted for this request


_current: ContextVar[RequestContext | None] = ContextVar("llmaas_request", default=None)

# Safe request ids: what tracing systems send (uuid, hex, W3C-ish ids) and nothing that could forge a log line.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def sanitize_request_id(value: str | None) -> str | None:
    """A client's X-Request-ID if it is short and made of safe characters, else None (we generate one)."""
    if value and _REQUEST_ID_RE.fullmatch(value):
        return value
    return None


def current() -> RequestContext | None:
    return _current.get()


def request_id() -> str | None:
    ctx = _current.get()
    return ctx.request_id if ctx else None


def bind(ctx: RequestContext) -> Any:
    """Make `ctx` the current request (returns the token for `unbind`)."""
    return _current.set(ctx)


def unbind(token: Any) -> None:
    _current.reset(token)


def note(*, model: str | None = None, key_prefix: str | None = None) -> None:
    """Record what the request turned out to be about (called by auth/meter code); a no-op outside a request."""
    ctx = _current.get()
    if ctx is None:
        return
    if model is not None:
        ctx.model = _printable(model, 128)  # a client string: bounded, and unable to break a plain log line
    if key_prefix is not None:
        ctx.key_prefix = _printable(key_prefix, 16)


def _printable(text: str, limit: int) -> str:
    return re.sub(r"[^\x21-\x7e]", "?", text[:limit])


# --- content gate ------------------------------------------------------------------------------------------------

_log_content = False


def content(text: str | None) -> str:
    """Prompts/completions for a log line: the text with `log_content` (dev only), else just its length."""
    if text is None:
        return ""
    return text if _log_content else f"<{len(text)} chars>"


# --- formatting --------------------------------------------------------------------------------------------------

# Fields a log call may attach with `extra={...}` that the JSON formatter emits; anything else is dropped, so a
# careless `extra` cannot smuggle a secret into structured logs.
EXTRA_FIELDS = (
    "method", "route", "status", "latency_s", "key_prefix", "model", "client", "event", "job_id", "file_id",
    "worker", "tokens", "prompt_tokens", "completion_tokens", "reason", "port", "host",
)  # fmt: skip


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, whitelisted extras, exc (traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_ACCESS_IN_MESSAGE = ("method", "route", "status", "latency_s", "event")  # the access message already shows them


class PlainFormatter(logging.Formatter):
    """`time level logger [request id] message key=value…` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        skip = _ACCESS_IN_MESSAGE if getattr(record, "event", None) == "access" else ()
        extras = [
            f"{n}={getattr(record, n)}" for n in EXTRA_FIELDS if n not in skip and getattr(record, n, None) is not None
        ]
        if extras:
            head, sep, tail = line.partition("\n")  # keep a traceback after the fields
            line = head + " " + " ".join(extras) + sep + tail
        return line


_handler: logging.Handler | None = None


def configure_logging(settings: Any, stream: Any = None) -> None:
    """Install one handler on the root logger (idempotent): JSON if `settings.log_json`, plain otherwise.

    uvicorn's loggers are routed through it too; its own access log should be off (`access_log=False`) because ours
    logs the route template and request id instead of the raw URL.
    """
    global _handler, _log_content
    _log_content = bool(getattr(settings, "log_content", False)) and getattr(settings, "environment", "") == "dev"
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream or sys.stderr)
    _handler.setFormatter(JsonFormatter() if getattr(settings, "log_json", False) else PlainFormatter())
    _handler.addFilter(_RequestIdFilter())
    root.addHandler(_handler)
    root.setLevel(str(getattr(settings, "log_level", "info")).upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    # Libraries that log request bodies or URLs at debug level stay quiet unless content logging is on.
    for name in ("httpx", "httpcore", "urllib3", "multipart"):
        logging.getLogger(name).setLevel(logging.DEBUG if _log_content else logging.WARNING)
    # Alembic narrates every plugin and migration step at info; a first start should read as a few lines.
    debug = str(getattr(settings, "log_level", "info")).lower() == "debug"
    logging.getLogger("alembic").setLevel(logging.DEBUG if debug else logging.WARNING)


def quiet_progress_bars() -> None:
    """No tqdm bars from transformers / huggingface_hub / GGUF conversion in a server log (they are not log lines).

    Environment defaults (an operator's own setting wins), set before those libraries read them; libraries already
    imported are told directly.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


# --- access log --------------------------------------------------------------------------------------------------

access_logger = logging.getLogger("llmaas.access")


def access(*, method: str, route: str, status: int, latency_s: float, ctx: RequestContext | None) -> None:
    """One line per request: method, route template, status, latency, key prefix and model (no path, no body)."""
    extra: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status,
        "latency_s": round(latency_s, 6),
        "event": "access",
    }
    if ctx is not None:
        extra["request_id"] = ctx.request_id
        if ctx.key_prefix:
            extra["key_prefix"] = ctx.key_prefix
        if ctx.model:
            extra["model"] = ctx.model
    access_logger.info("%s %s %s %.3fs", method, route, status, latency_s, extra=extra)
