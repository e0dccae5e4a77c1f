"""What chat and text completions share: model resolution, the token budget, one `Generation` per API call, and
the `GenerationRun` base that turns a started generation into a response or a chunk stream. The small helpers every
model endpoint uses (ids, model_not_found, model kinds, token-id checks) live here too.

A `Generation` is the n engine requests of one call: it reserves tokens with the meter before anything reaches the
engine, submits the requests together and reads their events from the one stream the engine returns for them, and
when the consumer stops (done, client disconnect, error) closes it in one place: the stream aborts whatever still
runs, and the meter is settled with what the engine reports it generated. Framework-free: no FastAPI here.
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

from llmaas import log
from llmaas.api.deps import Call
from llmaas.api.protocol.common import PromptTokensDetails, Usage
from llmaas.engine.protocol import ChatEngine, TokenStream
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
    output_tokens: int = 0  # the engine's count
    cached_tokens: int = 0
    finish_reason: FinishReason | None = None
    last_token_time: float | None = None  # the engine core's time of its latest token (None: no token yet)


@dataclass
class Generation:
    """The engine requests of one call (one per choice), submitted as one engine stream, closed and settled once."""

    target: Target
    call: Call
    route: str
    request_id: str
    requests: list[EngineRequest]
    prompt_index: list[int]  # choice -> which prompt it continues
    prompt_lengths: list[int]  # per prompt
    reservation: Reservation | None = None
    choices: list[ChoiceState] = field(default_factory=list)
    _stream: TokenStream | None = None  # None until submitted, and for good when the engine refused the call
    _choice_of: dict[str, int] = field(default_factory=dict)  # engine request id -> choice
    _started: float = field(default_factory=time.monotonic)
    _status: int = 200
    _closed: bool = False

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.reservation.headers) if self.reservation else {}

    @property
    def prompt_tokens(self) -> int:
        return sum(self.prompt_lengths)

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
        """Reserve tokens, submit every choice (a refusal, such as Overloaded, raises here) and wait for the first
        event, so that a request the engine fails at once is still an HTTP error and not a stream that fails."""
        reserve = self.prompt_tokens + sum(r.params.max_tokens for r in self.requests)
        log.note(model=self.target.model)  # the request's model, for the access log and the request metrics
        self.reservation = await self.call.meter.admit(
            self.call.principal, model=self.target.model, route=self.route, request_id=self.request_id, tokens=reserve
        )
        self.choices = [ChoiceState(r, p) for r, p in zip(self.requests, self.prompt_index)]
        self._choice_of = {r.request_id: i for i, r in enumerate(self.requests)}
        try:
            self._stream = self.target.engine.generate(self.requests)
            return await self._next()
        except BaseException as exc:
            self._status = _status_of(exc)
            await self.close()
            raise

    async def events(self, first: tuple[int, TokenEvent]) -> AsyncIterator[tuple[int, TokenEvent]]:
        """Every event of every choice (the one `start` returned first); closes however the consumer stops."""
        try:
            item: tuple[int, TokenEvent] | None = first
            while item is not None:
                yield item
                item = await self._next() if not all(c.finished for c in self.choices) else None
        except BaseException as exc:
            self._status = _status_of(exc)
            raise
        finally:
            await self.close()

    async def _next(self) -> tuple[int, TokenEvent]:
        assert self._stream is not None  # start() submitted
        event = await anext(self._stream)
        i = self._choice_of[event.request_id]
        choice = self.choices[i]
        choice.output_tokens = max(choice.output_tokens, event.num_output_tokens)  # a failure event may carry 0
        choice.cached_tokens = max(choice.cached_tokens, event.num_cached_tokens)
        if event.num_prompt_tokens:
            self.prompt_lengths[choice.prompt_index] = event.num_prompt_tokens
        if self.call.metrics is not None:
            choice.last_token_time = self.call.metrics.token_times(
                self.target.engine.model_name, choice.last_token_time, event
            )
        if event.finished:
            choice.finished = True
            choice.finish_reason = event.finish_reason
            if event.finish_reason == FinishReason.ERROR:
                raise EngineError(event.error or "The model failed on this request.")
            if event.finish_reason == FinishReason.ABORT:
                raise Unavailable("The request was aborted: the server is shutting down.")
        return i, event

    async def close(self) -> None:
        """Abort what still runs and settle the meter, once (the SSE response calls it whatever happened); shielded,
        so it finishes even while its caller is being cancelled."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._stream is not None:
                await self._stream.aclose()
            if self.reservation is None:
                return
            prompt_tokens = self.prompt_tokens if self._stream is not None else 0  # a refused call never ran
            if self.call.metrics is not None:
                self.call.metrics.usage(
                    self.target.model, prompt_tokens=prompt_tokens, completion_tokens=self.completion_tokens
                )
            await self.call.meter.settle(
                self.reservation,
                prompt_tokens=prompt_tokens,
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
