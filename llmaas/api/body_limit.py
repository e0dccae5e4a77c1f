"""Caps request bodies before anything parses them: 413 with OpenAI's error object.

JSON bodies are read here, counting bytes as they arrive (Content-Length or chunked alike), up to
`limits.max_body_bytes`, then replayed to the app; nothing past the cap is ever buffered. Multipart uploads
(`/v1/files`) get `limits.max_upload_bytes` and are counted as they stream (they are not buffered here).
A pure ASGI middleware: it decides on the raw scope, not on anything the client rebuilt.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmaas.api.errors import error_response
from llmaas.errors import PayloadTooLarge


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
        cap = self.max_upload_bytes if multipart else self.max_body_bytes
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

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # afterwards: only http.disconnect (streams watch for it)

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(cap: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(PayloadTooLarge(f"The request body is larger than the limit of {cap} bytes."))
        response.headers["Connection"] = "close"  # do not read the rest of an oversized body
        await response(scope, receive, send)
