"""AsyncEngine: the asyncio face of EngineCore (implements `llmaas.engine.protocol.ChatEngine`), and its factory.

The step loop runs in one thread, so the event loop never waits for a forward pass; each step's TokenEvents come
back to the loop with one `call_soon_threadsafe` and land in per-request asyncio queues. `generate` refuses work
beyond `max_waiting` queued requests with `Overloaded` (→ 429 + Retry-After); closing or cancelling the stream
aborts the sequence, which frees its KV blocks at the next step.

It knows nothing of HTTP, tenants or chat templates.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any, AsyncIterator

import torch

from llmaas.engine.core import EngineCore
from llmaas.engine.kv_cache import KVCacheManager
from llmaas.engine.models.llama import Llama
from llmaas.engine.runner import ModelRunner, ThreadTuner, kv_block_bytes
from llmaas.engine.scheduler import Scheduler
from llmaas.engine.types import EngineRequest, EngineStats, TokenEvent
from llmaas.errors import InvalidRequest, Overloaded, Unavailable

log = logging.getLogger(__name__)


class AsyncEngine:
    def __init__(self, core: EngineCore, *, model_name: str, tokenizer: Any, max_model_len: int, max_waiting: int,
                 lora_manager: Any = None) -> None:
        self.core, self.model_name, self.tokenizer = core, model_name, tokenizer
        self.max_model_len, self.max_waiting = max_model_len, max_waiting
        self.lora_manager = lora_manager
        self._queues: dict[str, asyncio.Queue[TokenEvent]] = {}  # touched only on the event loop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.model_name}", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Stop the step loop; every open stream ends with FinishReason.ABORT."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(thread.join, 30.0)
        if not thread.is_alive():
            self._dispatch(self.core.abort_all())

    def _run(self) -> None:
        while not self._stopping:
            if not self.core.has_work():
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                events = self.core.step()
            except Exception:  # a bug in the engine itself: fail what is in flight, keep serving
                log.exception("engine step crashed; failing the requests in flight")
                try:
                    events = self.core.fail_all()
                except Exception:
                    log.exception("could not fail the requests in flight")
                    events = []
            if not events and not self.core.stats().last_step_seqs:
                self._wake.wait(0.005)  # work exists but none could be scheduled this step: do not spin
                self._wake.clear()
            if events:
                try:
                    self._loop.call_soon_threadsafe(self._dispatch, events)  # type: ignore[union-attr]
                except RuntimeError:  # the event loop is gone: nobody is listening any more
                    return

    def _dispatch(self, events: list[TokenEvent]) -> None:
        for ev in events:
            q = self._queues.get(ev.request_id)
            if q is not None:
                q.put_nowait(ev)
                if ev.finished:
                    del self._queues[ev.request_id]

    # --- ChatEngine --------------------------------------------------------------------------------------

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenEvent]:
        """Submit now (raising Overloaded when the queue is full) and stream its TokenEvents."""
        if self._thread is None or self._stopping:
            raise Unavailable("The model is not running.")
        if request.request_id in self._queues:
            raise InvalidRequest("Duplicate request id.")
        if self.core.num_waiting() >= self.max_waiting:
            raise Overloaded("The server is busy; retry shortly.", retry_after=1.0)
        q: asyncio.Queue[TokenEvent] = asyncio.Queue()
        self._queues[request.request_id] = q
        self.core.add_request(request)
        self._wake.set()
        return self._stream(request.request_id, q)

    async def _stream(self, request_id: str, q: asyncio.Queue[TokenEvent]) -> AsyncIterator[TokenEvent]:
        finished = False
        try:
            while not finished:
                ev = await q.get()
                finished = ev.finished
                yield ev
        finally:
            if not finished:  # client went away (GeneratorExit / CancelledError): free the sequence's blocks
                self._queues.pop(request_id, None)
                self.core.abort_request(request_id)
                self._wake.set()

    async def abort(self, request_id: str) -> None:
        self.core.abort_request(request_id)
        self._wake.set()

    def register_adapter(self, adapter_id: str, path: Path) -> None:
        if self.lora_manager is None:
            raise InvalidRequest("This model does not serve adapters.")
        self.lora_manager.register(adapter_id, path)

    def stats(self) -> EngineStats:
        return self.core.stats()


# --- factory -------------------------------------------------------------------------------------------


def _make_lora_manager(spec: Any, loaded: Any, model: Llama, device: torch.device, dtype: torch.dtype) -> Any:
    if not spec.allow_adapters or spec.max_loras < 1:
        return None
    try:
        from llmaas.engine.lora import LoraManager
    except ImportError:
        return None
    return LoraManager(loaded.config, max_loras=spec.max_loras, device=device, dtype=dtype)


def build_chat_engine(spec: Any, loaded: Any, device: torch.device | str, dtype: torch.dtype, *,
                      num_blocks: int | None = None) -> AsyncEngine:
    """A ready-to-start AsyncEngine for one ModelSpec and its LoadedModel (registry.py calls this).

    `num_blocks` overrides the KV size computed from `spec.kv_cache_mb` (tests use it to force preemption).
    """
    from llmaas.engine.detokenizer import IncrementalDetokenizer
    from llmaas.engine.sampler import Sampler

    device = torch.device(device)
    model = Llama.from_hf(loaded.config, loaded.tensors, device, dtype)
    if model.pack_weights():
        log.info("engine: projections run on oneDNN-packed bf16 weights")
    threads = ThreadTuner(model) if device.type == "cpu" else None
    if threads is not None:
        threads.maybe_retune()
    num_blocks = num_blocks or max(spec.kv_cache_mb * 2**20 // kv_block_bytes(model, spec.block_size, dtype), 1)
    max_len = spec.max_model_len or model.args.max_position_embeddings
    window = getattr(loaded.config, "sliding_window", None)
    if window and getattr(loaded.config, "use_sliding_window", True):
        max_len = min(max_len, window)  # we attend fully; within the window that is exact
    max_len = min(max_len, num_blocks * spec.block_size)  # one sequence alone always fits in the cache
    lora = _make_lora_manager(spec, loaded, model, device, dtype)
    tokenizer = loaded.tokenizer
    kv = KVCacheManager(num_blocks, spec.block_size)
    scheduler = Scheduler(kv, max_num_seqs=spec.max_num_seqs, max_num_batched_tokens=spec.max_num_batched_tokens,
                          max_model_len=max_len, eos_token_ids=list(tokenizer.eos_token_ids))
    runner = ModelRunner(model, num_blocks=num_blocks, block_size=spec.block_size, max_model_len=max_len,
                         device=device, dtype=dtype, lora_manager=lora, threads=threads)
    core = EngineCore(runner, scheduler, Sampler(tokenizer), tokenizer, IncrementalDetokenizer,
                      max_model_len=max_len, lora_manager=lora)
    return AsyncEngine(core, model_name=spec.name, tokenizer=tokenizer, max_model_len=max_len,
                       max_waiting=spec.max_waiting, lora_manager=lora)
