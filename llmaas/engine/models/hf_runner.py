"""The transformers fallback: a runner behind `EngineCore` for architectures our engine does not implement.

Correct but slower: each scheduled sequence runs alone through transformers' own model with its own KV cache (no
paging, no batching across sequences, no prefix sharing, no adapters). Everything else is the engine's: the
scheduler (continuous batching of *steps*, so concurrent streams advance together; chunked prefill; preemption),
sampling, logprobs, seeds, stop strings, constrained decoding, validation and errors. The KV cache manager only
keeps accounts here, sized from `kv_cache_mb` as for the native engine, so memory stays bounded the same way. The
registry picks this for any architecture without a builder and says so in the log.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import Tensor

from llmaas.config import ModelSpec
from llmaas.engine.client import AsyncEngine
from llmaas.engine.core import EngineCore
from llmaas.engine.kv_cache import KVCacheManager
from llmaas.engine.runner import RunnerOutput
from llmaas.engine.scheduler import Scheduler, SchedulerOutput

log = logging.getLogger(__name__)


class HFRunner:
    """`ModelRunner`'s contract (`execute`, `release`, `device`, `vocab_size`) over a transformers causal LM."""

    lora_manager = None
    threads = None

    def __init__(self, model: Any, device: torch.device, vocab_size: int) -> None:
        self.model, self.device, self.vocab_size = model, device, vocab_size
        # transformers renamed `past_key_values` to `cache` (5.x); speak whichever this model's forward takes
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self._caches: dict[str, tuple[int, Any]] = {}  # request id -> (tokens in its cache, the cache)

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput) -> RunnerOutput:
        rows: list[Tensor] = []  # fp32 logits of the rows someone reads, in order
        num_rows = 0
        out = RunnerOutput(torch.empty(0), {}, {})
        for s in sched.seqs:
            req, rid = s.request, s.request.request_id
            cached, past = self._caches.get(rid, (0, None))
            begin = s.start if cached == s.start else 0  # a preempted sequence recomputes from its start
            if begin == 0:
                past = None
            ids = torch.tensor([req.all_token_ids[begin : s.start + s.num_new]], device=self.device)
            result = self.model(input_ids=ids, use_cache=True, **{self._cache_kw: past})
            self._caches[rid] = (s.start + s.num_new, result.get("cache", result.get("past_key_values")))
            logits = result.logits[0, s.start - begin :]  # [num_new, V]: positions start .. start+num_new-1
            if req.echo_prompt_logprobs and s.start < req.num_prompt_tokens - 1:
                n = min(s.start + s.num_new, req.num_prompt_tokens - 1) - s.start
                out.prompt_rows[rid] = (num_rows, n, s.start)
                rows.append(logits[:n].float())
                num_rows += n
            if s.sample:
                out.sample_row[rid] = num_rows
                rows.append(logits[-1:].float())
                num_rows += 1
        out.logits = torch.cat(rows) if rows else torch.empty(0, self.vocab_size, device=self.device)
        return out

    def release(self, request_id: str) -> None:
        self._caches.pop(request_id, None)


def _kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """What transformers' cache holds per token (K and V of every layer), from whichever config names exist."""
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None) or 1
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or 1
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 1
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()


def build_fallback_engine(spec: ModelSpec, loaded: Any, device: torch.device, dtype: torch.dtype) -> AsyncEngine:
    """Registry hook for unknown architectures: transformers' model class for the folder (no remote code)."""
    from transformers import AutoModelForCausalLM

    from llmaas.engine.detokenizer import IncrementalDetokenizer
    from llmaas.engine.sampler import Sampler

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
    num_blocks = max(spec.kv_cache_mb * 2**20 // (_kv_bytes_per_token(cfg, dtype) * spec.block_size), 1)
    max_len = int(min(spec.max_model_len or native, native, num_blocks * spec.block_size))
    tokenizer = loaded.tokenizer
    vocab = int(model.get_output_embeddings().weight.shape[0])  # type: ignore[no-untyped-call]
    scheduler = Scheduler(
        KVCacheManager(num_blocks, spec.block_size),
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        max_model_len=max_len,
        eos_token_ids=list(tokenizer.eos_token_ids),
    )
    core = EngineCore(
        HFRunner(model, torch.device(device), vocab),
        scheduler,
        Sampler(tokenizer),
        tokenizer,
        IncrementalDetokenizer,
        max_model_len=max_len,
    )
    return AsyncEngine(
        core, model_name=spec.name, tokenizer=tokenizer, max_model_len=max_len, max_waiting=spec.max_waiting
    )
