"""ModelRegistry: every served model by name — chat engines and embedders — built from `Settings.models`.

Chat models are built by a small registry keyed by architecture: our own engine registers Llama, Mistral and Qwen2
exactly as an extension would register another (`register_architecture`); anything else goes to the transformers
fallback (correct, slower). It does not validate requests or know about HTTP; the API asks it for a model by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.device import pick_device, pick_dtype
from llmaas.engine.models.loader import LoadedModel, load_model, resolve_model_dir
from llmaas.engine.protocol import ChatEngine, Embedder, ModelInfo
from llmaas.engine.types import EngineStats
from llmaas.errors import ModelNotFound

log = logging.getLogger(__name__)

ChatBuilder = Callable[[ModelSpec, LoadedModel, torch.device, torch.dtype, Settings], ChatEngine]
"""Hook: build a ready-to-start ChatEngine from a spec and its loaded weights, on `device` in `dtype`."""

_BUILDERS: dict[str, ChatBuilder] = {}


def register_architecture(*architectures: str) -> Callable[[ChatBuilder], ChatBuilder]:
    """Decorator: serve these HF architectures (config.json `architectures[0]`) with the decorated builder."""

    def deco(fn: ChatBuilder) -> ChatBuilder:
        for name in architectures:
            _BUILDERS[name] = fn
        return fn

    return deco


@register_architecture("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
def _native_engine(
    spec: ModelSpec, loaded: LoadedModel, device: torch.device, dtype: torch.dtype, settings: Settings
) -> ChatEngine:
    """Our engine: continuous batching over a paged KV cache, its core in a process of its own unless told not to."""
    if spec.engine_process:
        from llmaas.engine.process import EngineProcess

        return EngineProcess(spec, loaded, device, dtype, settings)
    from llmaas.engine.factory import build_chat_engine

    return build_chat_engine(spec, loaded, device, dtype, num_threads=settings.num_threads)


def _fallback_engine(
    spec: ModelSpec, loaded: LoadedModel, device: torch.device, dtype: torch.dtype, settings: Settings
) -> ChatEngine:
    """Any other architecture: transformers' own model, one sequence at a time (slower, logged as such)."""
    try:
        from llmaas.engine.models.hf_runner import build_fallback_engine
    except ImportError as e:
        raise ValueError(f"model {spec.name!r}: architecture {loaded.architecture!r} is not supported") from e
    if spec.quantization != "none":
        raise ValueError(
            f"model {spec.name!r}: quantization={spec.quantization} needs the native engine, which does "
            f"not serve architecture {loaded.architecture!r}"
        )
    return build_fallback_engine(spec, loaded, device, dtype)


def builder_for(architecture: str) -> ChatBuilder:
    return _BUILDERS.get(architecture, _fallback_engine)


# --- the registry ---------------------------------------------------------------------------------------


class ModelRegistry:
    """Implements `llmaas.engine.protocol.Models`."""

    def __init__(self, chat: dict[str, ChatEngine], embedders: dict[str, Embedder], created: int | None = None) -> None:
        self._chat = chat
        self._embedders = embedders
        self.created = int(created if created is not None else time.time())

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelRegistry:
        """Load every model in `settings.models` (slow: seconds per model). Nothing runs until `start()`."""
        chat: dict[str, ChatEngine] = {}
        embedders: dict[str, Embedder] = {}
        # Embedders first: transformers' loading briefly holds more than the model keeps; before the chat models'
        # KV caches exist, that transient stays under the final RSS (peak 1.44 GB instead of 1.52 with the defaults).
        for spec in sorted(settings.models, key=lambda s: s.kind != "embedding"):
            t0 = time.perf_counter()
            device = pick_device(spec)
            dtype = pick_dtype(spec, device)
            if spec.kind == "embedding":
                embedders[spec.name] = build_embedder(spec, settings, device, dtype)
            else:
                loaded = load_model(spec, settings)
                chat[spec.name] = builder_for(loaded.architecture)(spec, loaded, device, dtype, settings)
            log.info(
                "loaded %s model %r on %s (%s) in %.1f s", spec.kind, spec.name, device, dtype, time.perf_counter() - t0
            )
        return cls(chat, embedders)

    @property
    def ready(self) -> bool:
        """Every model is loaded and every chat engine takes requests (/ready is 503 while one restarts)."""
        return bool(self._chat or self._embedders) and all(getattr(e, "ready", True) for e in self._chat.values())

    def chat(self, name: str) -> ChatEngine:
        engine = self._chat.get(name)
        if engine is None:
            raise ModelNotFound(_not_found(name, "chat"), param="model")
        return engine

    def embedder(self, name: str) -> Embedder:
        embedder = self._embedders.get(name)
        if embedder is None:
            raise ModelNotFound(_not_found(name, "embedding"), param="model")
        return embedder

    def list(self) -> list[ModelInfo]:
        chat = [ModelInfo(n, "chat", e.max_model_len, self.created) for n, e in self._chat.items()]
        emb = [ModelInfo(n, "embedding", e.max_model_len, self.created) for n, e in self._embedders.items()]
        return chat + emb

    async def start(self) -> None:
        for model in [*self._chat.values(), *self._embedders.values()]:
            start = getattr(model, "start", None)
            if start is not None:
                await start()

    async def shutdown(self) -> None:
        for model in [*self._chat.values(), *self._embedders.values()]:
            stop = getattr(model, "shutdown", None)
            if stop is None:
                continue
            try:
                await stop()
            except Exception:  # one model failing to stop must not keep the others running
                log.exception("shutting down a model failed")

    def stats(self) -> dict[str, EngineStats]:
        return {name: engine.stats() for name, engine in self._chat.items()}


def build_embedder(spec: ModelSpec, settings: Settings, device: torch.device, dtype: torch.dtype) -> Embedder:
    from llmaas.engine.embedder import TransformersEmbedder

    return TransformersEmbedder(spec.name, resolve_model_dir(spec, settings), device, dtype, spec.max_model_len)


def _not_found(name: Any, kind: str) -> str:
    shown = str(name)[:96]  # display text only, bounded
    return f"The {kind} model '{shown}' does not exist or you do not have access to it."
