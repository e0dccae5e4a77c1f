"""The asyncio face of the engine (`llmaas.engine.protocol.ChatEngine`): one stream of TokenEvents per API call.

`EngineFrontend` is what every way of running a core shares. `generate(requests)` submits the engine requests of one
call (one per choice and prompt) together and returns one `EngineStream`: a single asyncio queue that `_dispatch`
fills with the events of all of them, in the order the core produced them. Refusals raise at submit, before anything
runs: Unavailable (not running), InvalidRequest (an id already live) and Overloaded beyond `max_waiting` queued
requests (→ 429 + Retry-After); the call's requests submitted before the refusal are aborted. Closing the stream
aborts every request of it still running (their KV blocks are freed at the next step).

Where the core steps is the subclass's business: `client.py`'s `AsyncEngine` runs it in a thread of this process,
`process.py`'s `EngineProcess` in a child process. No torch here. It knows nothing of HTTP, tenants or chat templates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llmaas.engine.types import EngineRequest, TokenEvent
from llmaas.errors import InvalidRequest, Overloaded, Unavailable


class EngineStream:
    """The TokenEvents of one call's engine requests, through one queue; it ends after the last one finished.

    `aclose()` aborts the requests that have not finished (idempotent; it never awaits, so a cancellation cannot
    stop it halfway)."""

    def __init__(self, frontend: EngineFrontend) -> None:
        self._frontend = frontend
        self.queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self.unfinished: set[str] = set()  # request ids submitted whose last event has not been read

    def __aiter__(self) -> EngineStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if not self.unfinished:
            raise StopAsyncIteration
        event = await self.queue.get()
        if event.finished:
            self.unfinished.discard(event.request_id)
        return event

    async def aclose(self) -> None:
        self._frontend._close(self)


class EngineFrontend:
    """Streams of TokenEvents by request id. Subclasses deliver requests to a core and call `_dispatch` with what
    comes back, on the event loop."""

    def __init__(self, *, model_name: str, tokenizer: Any, max_model_len: int, max_waiting: int) -> None:
        self.model_name, self.tokenizer = model_name, tokenizer
        self.max_model_len, self.max_waiting = max_model_len, max_waiting
        self._queues: dict[str, asyncio.Queue[TokenEvent]] = {}  # request id -> its stream's; only on the event loop

    # --- what a way of running the core provides --------------------------------------------------------

    def _accepting(self) -> bool:
        raise NotImplementedError

    def _num_waiting(self) -> int:
        raise NotImplementedError

    def _submit(self, request: EngineRequest) -> None:
        raise NotImplementedError

    def _cancel(self, request_id: str) -> None:
        raise NotImplementedError

    @property
    def ready(self) -> bool:
        """Taking requests (False before start, after shutdown, while an engine process restarts)."""
        return self._accepting()

    # --- ChatEngine --------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[EngineRequest]) -> EngineStream:
        """Submit every request now (or none: a refusal raises, and aborts those already submitted) and stream
        their TokenEvents."""
        if not self._accepting():
            raise Unavailable("The model is not running.")
        stream = EngineStream(self)
        try:
            for request in requests:
                # The one duplicate-id check: every request reaches a core through a frontend, and an id is live
                # here from submit until its last event (or its abort, which the core sees before any later submit).
                if request.request_id in self._queues:
                    raise InvalidRequest("Duplicate request id.")
                if self._num_waiting() >= self.max_waiting:
                    raise Overloaded("The server is busy; retry shortly.", retry_after=1.0)
                self._submit(request)
                self._queues[request.request_id] = stream.queue
                stream.unfinished.add(request.request_id)
        except BaseException:
            self._close(stream)
            raise
        return stream

    async def abort(self, request_id: str) -> None:
        """Abort one request; its stream still gets its last event (FinishReason.ABORT)."""
        self._cancel(request_id)

    def _close(self, stream: EngineStream) -> None:
        for request_id in stream.unfinished:
            self._queues.pop(request_id, None)
            self._cancel(request_id)
        stream.unfinished.clear()

    def _dispatch(self, events: list[TokenEvent]) -> None:
        for ev in events:
            q = self._queues.get(ev.request_id)
            if q is not None:
                q.put_nowait(ev)
                if ev.finished:
                    del self._queues[ev.request_id]
