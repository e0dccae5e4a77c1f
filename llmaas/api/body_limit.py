"""Caps request bodies before anything parses them: 413 with OpenAI's error object.

JSON bodies are read here, counting bytes as they arrive (Content-Length or chunked alike), up to
`limits.max_body_bytes`, then replayed to the app; nothing past the cap is ever buffered. Multipart uploads
(`/v1/files`) get `limits.max_upload_bytes` for the file itself plus `MULTIPART_OVERHEAD` for the framing around
it (boundaries, part headers, the `purpose` field), are counted as they stream (not buffered here), and the route
checks the file's own size against `limits.max_upload_bytes` exactly.

A buffered JSON body must also be text: strict UTF-8, and no escape that decodes to a lone surrogate (400 naming
the field, `llmaas.unicode`), so nothing downstream (tokenizers, the database, logs) ever sees a string that is not
valid Unicode. A pure ASGI middleware: it decides on the raw scope, not on anything the client rebuilt.
"""

from __future__ import annotations

import json

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmaas.api.errors import error_response
from llmaas.errors import InvalidRequest, PayloadTooLarge
from llmaas.unicode import SURROGATE_ESCAPE, lone_surrogate_path

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around an uploaded file, allowed on top of its cap


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        multipart = headers.get("content-type", "").lower().startswith("multipart/")
        cap = self.max_upload_bytes + MULTIPART_OVERHEAD if multipart else self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            await self._too_large(cap, scope, receive, send)
            return
        if multipart:  # streamed to the route; Starlette counts and raises 413 past the cap
            await RequestBodyLimitMiddleware(self.app, cap)(scope, receive, send)
            return

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > cap:
                await self._too_large(cap, scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break

        body = b"".join(chunks)
        problem = not_text(body)
        if problem is not None:
            await error_response(problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards: only http.disconnect (streams watch for it)

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(cap: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(PayloadTooLarge(f"The request body is larger than the limit of {cap} bytes."))
        response.headers["Connection"] = "close"  # do not read the rest of an oversized body
        await response(scope, receive, send)


def not_text(body: bytes) -> InvalidRequest | None:
    """Why a JSON body is not valid Unicode text (a 400 to send), or None; bodies that are not JSON pass (the route says)."""
    try:
        body.decode("utf-8")  # strict: refuses invalid bytes and CESU-8 surrogates alike
    except UnicodeDecodeError:
        return InvalidRequest("The request body is not valid UTF-8.")
    if SURROGATE_ESCAPE.search(body) is None:  # the common case: nothing to walk
        return None
    try:
        value = json.loads(body)
    except ValueError:
        return None  # malformed JSON: the route answers with its own parse error
    path = lone_surrogate_path(value)
    if path is None:
        return None
    param = None if path == "body" else path[:256]
    return InvalidRequest(
        f"Invalid value for '{param or 'body'}': the string contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode.",
        param=param,
    )
