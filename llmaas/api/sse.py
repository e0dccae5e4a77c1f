"""Server-sent events exactly as OpenAI sends them, and the rule that a client who goes away aborts its work.

`sse_response(chunks)` frames each chunk as `data: <json>\\n\\n` and ends with `data: [DONE]\\n\\n`; an error after the
stream started becomes one `data: {"error": …}` event (the status line is already sent). However the response ends
(done, error, the client disconnecting and Starlette cancelling it) it closes the chunk iterator and then calls
`on_close`, the run's one close: its engine requests still running are aborted at once and the meter settled.
`event_sse_response()` frames named events (`event: …`) without [DONE], as the Responses API streams.
`until_disconnected()` gives non-streaming requests the same behaviour; `generation_response()` is both rules applied
to a chat or text completion, so their routes stay one line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from llmaas.api.errors import ClientDisconnected, error_sse

if TYPE_CHECKING:
    from llmaas.api.serving.generation import GenerationRun

DONE = "data: [DONE]\n\n"
T = TypeVar("T")


# Line breaks to str.splitlines() that JSON leaves raw: clients that split an SSE body into lines that way
# (httpx's iter_lines, for one) would cut a data line in two. Escaped, they are the same JSON string.
_SPLITLINES_ESCAPES = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def encode(chunk: BaseModel) -> str:
    return f"data: {chunk.model_dump_json().translate(_SPLITLINES_ESCAPES)}\n\n"


def encode_event(event: Any) -> str:
    """A named event, as the Responses API streams them: `event: <type>` then its JSON (which repeats the type)."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


async def _frames(chunks: AsyncIterator[Any], named: bool = False) -> AsyncGenerator[str, None]:
    try:
        async for chunk in chunks:
            yield encode_event(chunk) if named else encode(chunk)
    except (asyncio.CancelledError, GeneratorExit):
        raise  # the client went away: nothing more to send
    except Exception as exc:  # noqa: BLE001 - every error after the headers must still reach the client
        yield error_sse(exc)
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # its own cleanup, now; aborting and settling is on_close's
    if not named:  # the Responses API ends with its last event, not [DONE]
        yield DONE


class SSEResponse(StreamingResponse):
    """A StreamingResponse that always closes its source, however the response ends."""

    media_type = "text/event-stream"

    def __init__(
        self,
        chunks: AsyncIterator[Any],
        headers: dict[str, str] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        named: bool = False,
    ) -> None:
        self._frames = _frames(chunks, named)
        self._on_close = on_close
        super().__init__(
            self._frames,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._frames.aclose()
            if self._on_close is not None:
                await self._on_close()  # even if the stream never started


def sse_response(
    chunks: AsyncIterator[BaseModel],
    headers: dict[str, str] | None = None,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> SSEResponse:
    return SSEResponse(chunks, headers, on_close)


def event_sse_response(
    events: AsyncIterator[dict[str, Any]],
    headers: dict[str, str] | None = None,
    on_close: Callable[[], Awaitable[None]] | None = None,
) -> SSEResponse:
    """Named events (`event:` + `data:`), no [DONE]: the framing of /v1/responses streams."""
    return SSEResponse(events, headers, on_close, named=True)


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run `work`; if the client disconnects first, cancel it (the serving layer aborts its engine requests)
    and raise ClientDisconnected."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message: MutableMapping[str, Any] = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        waiting: set[asyncio.Future[Any]] = {task, watcher}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        raise ClientDisconnected()
    return task.result()


async def generation_response(request: Request, prepare: Awaitable[GenerationRun], stream: bool) -> Response:
    """Start a generation, then stream its chunks as SSE or answer its whole result as JSON (with its rate-limit
    headers). A client who disconnects at any point aborts the engine requests."""
    run = await until_disconnected(request, prepare)
    if stream:
        return sse_response(run.chunks(), run.headers, on_close=run.close)
    result = await until_disconnected(request, run.complete())
    return JSONResponse(result.model_dump(mode="json"), headers=run.headers)
