"""The outermost layer of every HTTP request: request id, Host allowlist, security headers, metrics, access log; CORS.

What this is: one pure-ASGI middleware (`OpsMiddleware`, so streaming responses pass through untouched and are
timed to their last byte) plus Starlette's CORSMiddleware when, and only when, `settings.cors_origins` is set.
`install_middleware(app, settings)` registers both in `create_app`. What it isn't: authentication (deps.py) or the
error mapping (api/errors.py); the one response it writes itself is the 400 for a Host header not in the allowlist.

Order, outermost first: request id + timing + access log → Host check → security headers → CORS → the app.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmaas import ids, log, metrics
from llmaas.api.errors import error_payload
from llmaas.errors import InvalidRequest

# Headers every response carries. The CSP is a default for non-HTML bodies (JSON, SSE, files): a browser never
# renders them; HTML pages (console, /docs) set their own policy.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
DEFAULT_CSP = b"default-src 'none'; frame-ancestors 'none'"

# Kubelet probes send `Host: <pod IP>:<port>`; these two answer nothing a rebinding page could use, so they skip the
# Host allowlist (everything else, /metrics included, is checked).
PROBE_PATHS = frozenset({"/health", "/ready"})

# What a browser on an allowed origin may send and read. Never credentials: keys travel in Authorization.
CORS_ALLOW_HEADERS = ["Authorization", "Content-Type", "X-Request-ID", "OpenAI-Organization", "OpenAI-Project"]
CORS_EXPOSE_HEADERS = [
    "X-Request-ID",
    "Retry-After",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
]


def install_middleware(app: Any, settings: Any) -> None:
    """Register CORS (if configured) and then OpsMiddleware, which FastAPI makes the outermost."""
    origins = list(getattr(settings, "cors_origins", []) or [])
    if origins:
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"cors_origins: {origin!r} is not '*' or an http(s) origin")
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,  # never reflect an origin together with credentials (SECURITY.md 10)
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=600,
        )
    app.add_middleware(OpsMiddleware, settings=settings)


def host_allowed(host_header: str | None, allowed: list[str]) -> bool:
    """`allowed` empty = any host. Entries: exact host names, `*.example.com` suffixes, or `*`. Ports are ignored."""
    if not allowed:
        return True
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8000
        host = host[1 : host.find("]")] if "]" in host else host
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    for pattern in allowed:
        p = pattern.strip().lower()
        if p == "*" or p == host or (p.startswith("*.") and host.endswith(p[1:])):
            return True
    return False


def route_template(scope: Scope) -> str:
    """The matched route's template (`/v1/files/{file_id}`), never the raw path; "unmatched" for 404s."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return "unmatched"
    if type(route).__name__ == "Mount":
        return (path.rstrip("/") or "") + "/{path}"
    return path


class OpsMiddleware:
    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.settings = settings
        self.allowed_hosts = list(getattr(settings, "allowed_hosts", []) or [])
        self.configured = frozenset(m.name for m in getattr(settings, "models", []) or [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(_decode_headers(scope))
        ctx = log.RequestContext(log.sanitize_request_id(headers.get("x-request-id")) or ids.request_id())
        token = log.bind(ctx)
        start = time.monotonic()
        status = 500
        rid = ctx.request_id.encode()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                raw = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                names = {k.lower() for k, _ in raw}
                raw.append((b"x-request-id", rid))
                raw.extend((k, v) for k, v in SECURITY_HEADERS if k not in names)
                ctype = next((v for k, v in raw if k.lower() == b"content-type"), b"")
                if b"content-security-policy" not in names and not ctype.startswith(b"text/html"):
                    raw.append((b"content-security-policy", DEFAULT_CSP))
                message = {**message, "headers": raw}
            await send(message)

        try:
            if scope.get("path") not in PROBE_PATHS and not host_allowed(headers.get("host"), self.allowed_hosts):
                # DNS-rebinding guard: a page on evil.example resolving to 127.0.0.1 still sends Host: evil.example.
                await _invalid_host(send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            latency = time.monotonic() - start
            principal = (scope.get("state") or {}).get("principal")  # set by deps.get_principal
            key_prefix = getattr(principal, "key_prefix", None)
            if ctx.key_prefix is None and key_prefix:
                log.note(key_prefix=key_prefix)
            route = route_template(scope)
            label = metrics.model_label(ctx.model, self.configured)
            metrics.REQUESTS.labels(route, label, str(status)).inc()
            metrics.REQUEST_DURATION.labels(route, label).observe(latency)
            if status == 429 and not ctx.rate_limited:
                metrics.RATE_LIMIT_REJECTIONS.labels("other").inc()
            log.access(method=scope.get("method", "-"), route=route, status=status, latency_s=latency, ctx=ctx)
            log.unbind(token)


def _decode_headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])]


async def _invalid_host(send: Send) -> None:
    status, body, headers = error_payload(
        InvalidRequest("The Host header is not in this server's allowed hosts.", code="invalid_host")
    )
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
