"""What chat and text completions share: model resolution, the token budget, one `Generation` per API call, and
the `GenerationRun` base that turns a started generation into a response or a chunk stream. The small helpers every
model endpoint uses (ids, model_not_found, model kinds, token-id checks) live here too.

A `Generation` is the n engine requests of one call: it reserves tokens with the meter before anything reaches the
engine, runs the requests concurrently, merges their events, aborts whatever still runs when the consumer stops
(client disconnect, error), and settles the meter with what was actually generated. Framework-free: no FastAPI here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from llmaas.api.deps import Call
from llmaas.api.protocol.common import PromptTokensDetails, Usage
from llmaas.engine.protocol import ChatEngine
from llmaas.engine.types import EngineRequest, FinishReason, TokenEvent
from llmaas.errors import (
    ContextLengthExceeded,
    EngineError,
    InvalidRequest,
    LlmaasError,
    ModelNotFound,
    Unavailable,
)
from llmaas.tenancy.types import Reservation

SYSTEM_FINGERPRINT = "llmaas"
MIN_LOGPROB = -9999.0  # JSON has no -inf


def not_found(model: str) -> ModelNotFound:
    return ModelNotFound(f"The model `{model[:256]}` does not exist or you do not have access to it.", param="model")


# --- model resolution --------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    engine: ChatEngine
    model: str  # the id the client sent (base or fine-tuned)
    adapter_id: str | None = None


def kind_of(models: Any, name: str) -> str | None:
    """`chat` or `embedding` for a base model of the registry; None for any other name."""
    for info in models.list():
        if info.id == name:
            return str(info.kind)
    return None


async def resolve_chat_model(name: str, call: Call, route: str) -> Target:
    """A base chat model or the caller's fine-tuned model; 404 model_not_found otherwise (never 403)."""
    if not call.principal.may_use(name):
        raise not_found(name)
    kind = kind_of(call.models, name)
    if kind == "embedding":
        raise InvalidRequest(
            f"`{name}` is an embedding model; use /v1/embeddings. {route} needs a chat model.", param="model"
        )
    if kind == "chat":
        return Target(call.models.chat(name), name)
    if call.finetuned is not None:
        ft = await call.finetuned.lookup(name, call.principal)
        if ft is not None:
            try:
                engine = call.models.chat(ft.base_model)
            except ModelNotFound:
                raise not_found(name) from None
            # Adapters come only from our own store, by our own id (SECURITY.md #2); registering is idempotent.
            engine.register_adapter(ft.adapter_id, Path(ft.adapter_path))
            return Target(engine, name, ft.adapter_id)
    raise not_found(name)


def plan_max_tokens(requested: int | None, prompt_tokens: int, max_model_len: int, default: int, what: str) -> int:
    """Tokens to generate: the request's, or min(default, room left); 400 context_length_exceeded if it can't fit."""
    room = max_model_len - prompt_tokens
    if room <= 0 or (requested is not None and requested > room):
        wanted = prompt_tokens + (requested or 1)
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested {wanted} tokens "
            f"({prompt_tokens} in the {what}, {wanted - prompt_tokens} in the completion). "
            f"Please reduce the length of the {what} or completion.",
            param="messages" if what == "messages" else "prompt",
        )
    return requested if requested is not None else min(default, room)


def check_token_ids(ids: list[int], vocab_size: int, param: str) -> None:
    bad = next((t for t in ids if t >= vocab_size), None)
    if bad is not None:
        raise InvalidRequest(f"Token id {bad} is outside the vocabulary (0..{vocab_size - 1}).", param=param)


# --- one API call's engine requests ------------------------------------------------------------------


@dataclass(slots=True)
class ChoiceState:
    request: EngineRequest
    prompt_index: int
    finished: bool = False
    refused: bool = False  # the engine refused it at submit (queue full, not running): it never ran
    output_tokens: int = 0
    cached_tokens: int = 0
    finish_reason: FinishReason | None = None


@dataclass
class Generation:
    """The engine requests of one call (one per choice), admitted, merged, aborted and settled together."""

    target: Target
    call: Call
    route: str
    request_id: str
    requests: list[EngineRequest]
    prompt_index: list[int]  # choice -> which prompt it continues
    prompt_lengths: list[int]  # per prompt
    reservation: Reservation | None = None
    choices: list[ChoiceState] = field(default_factory=list)
    _queue: asyncio.Queue[tuple[int, TokenEvent | None, BaseException | None]] = field(default_factory=asyncio.Queue)
    _pumps: list[asyncio.Task[None]] = field(default_factory=list)
    _started: float = field(default_factory=time.monotonic)
    _status: int = 200
    _cleaned: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.reservation.headers) if self.reservation else {}

    @property
    def prompt_tokens(self) -> int:
        return sum(self.prompt_lengths)

    @property
    def billed_prompt_tokens(self) -> int:
        """Prompt tokens to bill: each prompt once, unless the engine refused every choice of it (it never ran)."""
        ran = {c.prompt_index for c in self.choices if not c.refused}
        return sum(n for i, n in enumerate(self.prompt_lengths) if i in ran)

    @property
    def completion_tokens(self) -> int:
        return sum(c.output_tokens for c in self.choices)

    @property
    def cached_tokens(self) -> int:
        # Each prompt counts once (its n choices share it): the smallest hit among its choices.
        best: dict[int, int] = {}
        for c in self.choices:
            best[c.prompt_index] = min(best.get(c.prompt_index, c.cached_tokens), c.cached_tokens)
        return sum(best.values())

    def finish_reason(self, i: int) -> str:
        """OpenAI's finish_reason of choice i: `length` when max_tokens/context ran out, `stop` otherwise."""
        return "length" if self.choices[i].finish_reason == FinishReason.LENGTH else "stop"

    def usage(self) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=self.cached_tokens),
        )

    async def start(self) -> tuple[int, TokenEvent]:
        """Reserve tokens, submit every choice, and wait for the first event (so Overloaded is still a 429)."""
        reserve = self.prompt_tokens + sum(r.params.max_tokens for r in self.requests)
        self.reservation = await self.call.meter.admit(
            self.call.principal, model=self.target.model, route=self.route, request_id=self.request_id, tokens=reserve
        )
        self.choices = [ChoiceState(r, p) for r, p in zip(self.requests, self.prompt_index)]
        self._pumps = [asyncio.ensure_future(self._pump(i, r)) for i, r in enumerate(self.requests)]
        try:
            return await self._next()
        except BaseException as exc:
            self._status = _status_of(exc)
            await self._cleanup()
            raise

    async def events(self, first: tuple[int, TokenEvent]) -> AsyncIterator[tuple[int, TokenEvent]]:
        """Every event of every choice (the one `start` returned first); cleans up however the consumer stops."""
        try:
            item: tuple[int, TokenEvent] | None = first
            while item is not None:
                yield item
                item = await self._next() if not all(c.finished for c in self.choices) else None
        except BaseException as exc:
            self._status = _status_of(exc)
            raise
        finally:
            await self.close()  # shielded: cleanup must finish even while being cancelled

    async def _next(self) -> tuple[int, TokenEvent]:
        i, event, exc = await self._queue.get()
        if exc is not None:
            raise exc
        if event is None:  # _pump sends an event or an exception, never neither
            raise RuntimeError("engine stream produced no event")
        choice = self.choices[i]
        choice.output_tokens = max(choice.output_tokens + len(event.token_ids), event.num_output_tokens)
        choice.cached_tokens = max(choice.cached_tokens, event.num_cached_tokens)
        if event.num_prompt_tokens:
            self.prompt_lengths[choice.prompt_index] = event.num_prompt_tokens
        if event.finished:
            choice.finished = True
            choice.finish_reason = event.finish_reason
            if event.finish_reason == FinishReason.ERROR:
                raise EngineError(event.error or "The model failed on this request.")
            if event.finish_reason == FinishReason.ABORT:
                raise Unavailable("The request was aborted: the server is shutting down.")
        return i, event

    async def _pump(self, i: int, request: EngineRequest) -> None:
        got_event = False
        try:
            stream = self.target.engine.generate(request)
            try:
                async for event in stream:
                    got_event = True
                    await self._queue.put((i, event, None))
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    await aclose()  # closing the iterator aborts inside the engine
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which decides the status
            # Failing before its first event is the engine refusing the submit (Overloaded, Unavailable): nothing
            # ran, so nothing is billed for it. Engine failures of a running sequence arrive as events instead.
            self.choices[i].refused = not got_event
            await self._queue.put((i, None, exc))

    async def close(self) -> None:
        """Abort what still runs and settle the meter; idempotent (the SSE response calls it whatever happened)."""
        with anyio.CancelScope(shield=True):
            await self._cleanup()

    async def _cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        for task in self._pumps:
            task.cancel()
        for task in self._pumps:
            try:
                await task
            except BaseException:  # noqa: BLE001 - a cancelled pump is the expected end
                pass
        for c in self.choices:
            if not c.finished:
                await self.target.engine.abort(c.request.request_id)
        if self.reservation is not None:
            await self.call.meter.settle(
                self.reservation,
                prompt_tokens=self.billed_prompt_tokens,
                completion_tokens=self.completion_tokens,
                status=self._status,
                latency_s=time.monotonic() - self._started,
            )


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, LlmaasError):
        return exc.status
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return 499  # client closed the request: billed for what was generated
    return 500


# --- a started generation, as the routes see it ------------------------------------------------------


@dataclass
class GenerationRun:
    """A started `Generation` and its first event: `complete()` aggregates it, `chunks()` streams it.

    Subclasses (chat, completions) shape the answer; what every response of the call repeats lives here.
    """

    gen: Generation
    first: tuple[int, TokenEvent]
    created: int = field(init=False, default_factory=lambda: int(time.time()))

    @property
    def headers(self) -> dict[str, str]:
        return self.gen.headers

    async def close(self) -> None:
        await self.gen.close()

    def envelope(self) -> dict[str, Any]:
        """The fields every response and chunk of this call carries (the model as the client named it)."""
        return {
            "id": self.gen.request_id,
            "created": self.created,
            "model": self.gen.target.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }

    async def complete(self) -> BaseModel:
        raise NotImplementedError

    def chunks(self) -> AsyncIterator[BaseModel]:
        raise NotImplementedError
