"""What the API layer may call on an engine: the narrow, typed surface (and what a test fake implements).

`ChatEngine` generates (one `TokenStream` per API call); `Embedder` embeds; `Tokenizer` turns text/chat into ids and
back; `Models` is every served model by name (`llmaas.engine.registry.ModelRegistry`, or a test's fake). Nothing else
of the engine is visible above it, and this module imports no torch: the API types its wiring with it and still loads
without the engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from llmaas.engine.types import EngineRequest, EngineStats, TokenEvent


@runtime_checkable
class Tokenizer(Protocol):
    eos_token_ids: list[int]
    vocab_size: int

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def token_text(self, token_id: int) -> str:
        """The text of one token as OpenAI's logprobs show it (may be a partial UTF-8 piece)."""
        ...

    @property
    def has_chat_template(self) -> bool: ...

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the templated conversation. Raises InvalidRequest when the model has no chat template."""
        ...

    def compile_grammar(self, spec: Any, salt: str | None = None, timeout_s: float = 5.0) -> Any:
        """A GrammarSpec compiled for this vocabulary, for SamplingParams.grammar. Blocking (call it in a worker
        thread), cached per (salt, spec); raises llmaas.engine.types.GrammarError when it cannot be compiled."""
        ...


class TokenStream(Protocol):
    """The TokenEvents of one call's engine requests, in the order the engine produced them (each event names its
    request); it ends after every request's last event. `aclose()` aborts the requests still running."""

    def __aiter__(self) -> AsyncIterator[TokenEvent]: ...

    async def __anext__(self) -> TokenEvent: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ChatEngine(Protocol):
    model_name: str
    tokenizer: Tokenizer
    max_model_len: int

    def generate(self, requests: Sequence[EngineRequest]) -> TokenStream:
        """Submit all of one call's requests now and stream them. Raises, with none of them left running,
        Unavailable, InvalidRequest (a duplicate id) or Overloaded (the waiting queue is full)."""
        ...

    def register_adapter(self, adapter_id: str, path: Path) -> None:
        """Make a LoRA adapter (safetensors + adapter_config.json in our own store) servable; loaded lazily."""
        ...

    def stats(self) -> EngineStats: ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    model_name: str
    max_model_len: int
    dimensions: int

    @property
    def tokenizer(self) -> Tokenizer: ...

    async def embed(self, inputs: list[str] | list[list[int]]) -> tuple[list[list[float]], int]:
        """Normalized embeddings, one per input, and the number of prompt tokens used."""
        ...


@dataclass(slots=True)
class ModelInfo:
    id: str
    kind: Literal["chat", "embedding"]
    max_model_len: int
    created: int  # unix seconds
    owned_by: str = "llmaas"


class Models(Protocol):
    """Every served model by name (`app.state.models`): what the API layer looks models up in."""

    def chat(self, name: str) -> ChatEngine:
        """The chat engine called `name`; raises ModelNotFound."""
        ...

    def embedder(self, name: str) -> Embedder:
        """The embedder called `name`; raises ModelNotFound."""
        ...

    def list(self) -> list[ModelInfo]: ...

    def stats(self) -> dict[str, EngineStats]: ...

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...
