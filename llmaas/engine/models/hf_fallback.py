"""HFFallbackEngine: a ChatEngine for architectures our engine does not implement, run by transformers itself.

Correct but slower: one sequence at a time in a worker thread, transformers' own KV cache (no paging, no batching,
no prefix sharing, no adapters). It reuses our Sampler and IncrementalDetokenizer, so sampling, logprobs, seeds and
stop strings behave exactly as on the main engine. The registry picks it for any architecture without a builder
and says so in the log.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import torch

from llmaas.config import ModelSpec
from llmaas.engine.client import EngineFrontend
from llmaas.engine.detokenizer import IncrementalDetokenizer
from llmaas.engine.sampler import Sampler, SamplingRow, make_generator
from llmaas.engine.structured import GrammarState
from llmaas.engine.types import EngineRequest, EngineStats, FinishReason, TokenEvent, TokenLogprob
from llmaas.errors import InvalidRequest

log = logging.getLogger(__name__)


def build_fallback_engine(spec: ModelSpec, loaded: Any, device: torch.device, dtype: torch.dtype) -> HFFallbackEngine:
    """Registry hook for unknown architectures: transformers' model class for the folder (no remote code)."""
    from transformers import AutoModelForCausalLM

    log.warning(
        "model %r: architecture %s is served by the transformers fallback, one sequence at a time "
        "(correct, but much slower than Llama/Mistral/Qwen2 on the llmaas engine)",
        spec.name,
        loaded.architecture,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(loaded.source_dir), dtype=dtype, local_files_only=True, trust_remote_code=False
    )
    model.to(device).eval()  # type: ignore[arg-type]  # transformers types .to() as a decorated method
    cfg = loaded.config
    native = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or 2048
    max_len = min(spec.max_model_len or native, native)
    return HFFallbackEngine(spec, model, loaded.tokenizer, torch.device(device), int(max_len))


class HFFallbackEngine(EngineFrontend):
    """Implements `llmaas.engine.protocol.ChatEngine` over a transformers causal LM."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, device: torch.device, max_model_len: int) -> None:
        super().__init__(model_name=spec.name, tokenizer=tokenizer, max_model_len=max_model_len,
                         max_waiting=spec.max_waiting)
        self.model = model
        self.device = device
        self.sampler = Sampler(tokenizer)
        # transformers renamed `past_key_values` to `cache` (5.x); speak whichever this model's forward takes
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._waiting: collections.deque[EngineRequest] = collections.deque()
        self._aborted: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._running = 0
        self._steps = 0

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"hf-fallback-{self.model_name}", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(thread.join, 30.0)
        with self._lock:
            left = list(self._waiting)
            self._waiting.clear()
        self._dispatch([TokenEvent(req.request_id, [], "", finished=True, finish_reason=FinishReason.ABORT,
                                   num_prompt_tokens=len(req.prompt_token_ids)) for req in left])

    # --- ChatEngine -------------------------------------------------------------------------------------

    def generate(self, request: EngineRequest) -> AsyncIterator[TokenEvent]:
        if request.adapter_id is not None:
            raise InvalidRequest("This model does not serve adapters.", param="model")
        if not request.prompt_token_ids or len(request.prompt_token_ids) >= self.max_model_len:
            raise InvalidRequest(f"The prompt must have 1 to {self.max_model_len - 1} tokens.", param="messages")
        return super().generate(request)

    # --- EngineFrontend (its streams, overload and abort logic) -------------------------------------------

    def _accepting(self) -> bool:
        return self._thread is not None and not self._stopping

    def _num_waiting(self) -> int:
        return len(self._waiting)

    def _submit(self, request: EngineRequest) -> None:
        with self._lock:
            self._waiting.append(request)
        self._wake.set()

    def _cancel(self, request_id: str) -> None:
        with self._lock:
            self._aborted.add(request_id)
        self._wake.set()

    def register_adapter(self, adapter_id: str, path: Path) -> None:
        raise InvalidRequest("This model does not serve adapters.", param="model")

    def stats(self) -> EngineStats:
        return EngineStats(waiting=len(self._waiting), running=self._running, steps=self._steps,
                           last_step_seqs=self._running, last_step_tokens=self._running)

    # --- worker thread ----------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            with self._lock:
                item = self._waiting.popleft() if self._waiting else None
            if item is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            req = item
            self._running = 1
            try:
                self._generate(req, self._emit)
            except Exception:  # this sequence fails; the engine goes on
                log.exception("fallback generation failed")
                self._emit(TokenEvent(req.request_id, [], "", finished=True, finish_reason=FinishReason.ERROR,
                                         num_prompt_tokens=len(req.prompt_token_ids), error="Generation failed."))
            finally:
                self._running = 0
                with self._lock:
                    self._aborted.discard(req.request_id)

    def _emit(self, ev: TokenEvent) -> None:
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._dispatch, [ev])
            except RuntimeError:  # the loop is gone
                pass

    @torch.inference_mode()
    def _generate(self, req: EngineRequest, emit: Any) -> None:
        p, prompt = req.params, list(req.prompt_token_ids)
        gen = make_generator(p.seed, self.device) if p.seed is not None else None
        detok = IncrementalDetokenizer(self.tokenizer, prompt, p)
        stop_ids = set(p.stop_token_ids) | (set() if p.ignore_eos else set(self.tokenizer.eos_token_ids))
        grammar = GrammarState(p.grammar) if p.grammar is not None else None  # constrained decoding, as in core.py
        out_ids: list[int] = []
        past: Any = None
        x = torch.tensor([prompt], device=self.device)
        first = True
        while True:
            if self._stopping or req.request_id in self._aborted:
                emit(self._event(req, [], detok.flush(), None, FinishReason.ABORT, out_ids))
                return
            out = self.model(input_ids=x, use_cache=True, **{self._cache_kw: past})
            past = out.get("cache", out.get("past_key_values"))
            self._steps += 1
            prompt_logprobs = None
            if first and req.echo_prompt_logprobs:
                prompt_logprobs = self._prompt_logprobs(out.logits[0].float(), prompt, p.logprobs or 0)
            res = self.sampler(out.logits[:, -1, :].float(), [SamplingRow(p, out_ids, gen, prompt, grammar)])
            token = res.token_ids[0]
            out_ids.append(token)
            finish: FinishReason | None = None
            if grammar is not None and not grammar.accept(token):
                raise RuntimeError("the grammar refused a masked token")
            if token in stop_ids or (grammar is not None and grammar.terminated):
                finish, text = FinishReason.STOP, detok.flush()
            else:
                text, stop_hit = detok.add([token])
                if stop_hit:
                    finish = FinishReason.STOP
            if finish is None and (len(out_ids) >= p.max_tokens or len(prompt) + len(out_ids) >= self.max_model_len):
                finish, text = FinishReason.LENGTH, text + detok.flush()
            logprobs = [lp for lp in res.logprobs if lp is not None] if p.logprobs is not None else None
            ev = self._event(req, [token], text, logprobs, finish, out_ids)
            ev.prompt_logprobs, first = prompt_logprobs, False
            emit(ev)
            if finish is not None:
                return
            x = torch.tensor([[token]], device=self.device)

    def _event(self, req: EngineRequest, ids: list[int], text: str, logprobs: list[TokenLogprob] | None,
               finish: FinishReason | None, out_ids: list[int]) -> TokenEvent:
        return TokenEvent(req.request_id, ids, text, logprobs=logprobs, finished=finish is not None,
                          finish_reason=finish, num_prompt_tokens=len(req.prompt_token_ids),
                          num_output_tokens=len(out_ids))

    def _prompt_logprobs(self, logits: torch.Tensor, prompt: list[int], k: int) -> list[TokenLogprob | None]:
        # logits: [P, V]; position i predicts prompt[i + 1]
        raw = torch.log_softmax(logits, dim=-1)
        nxt = torch.tensor(prompt[1:], device=raw.device)
        chosen = raw[:-1].gather(1, nxt.unsqueeze(1)).squeeze(1).tolist()
        tops = raw[:-1].topk(k, dim=-1) if k > 0 else None
        text = self.tokenizer.token_text
        result: list[TokenLogprob | None] = [None]
        for i, tid in enumerate(prompt[1:]):
            top = []
            if tops is not None:
                top = [(t, text(t), v) for t, v in zip(tops.indices[i].tolist(), tops.values[i].tolist())]
            result.append(TokenLogprob(tid, text(tid), float(chosen[i]), top))
        return result
