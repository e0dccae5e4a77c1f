"""Building an engine for one chat model: its KV geometry, the EngineCore, and where that core runs.

`build_core` assembles model, KV cache, scheduler, runner, sampler and LoRA manager into an `EngineCore` (in whatever
process calls it). `build_chat_engine` wraps a core in `AsyncEngine` (a step thread inside this process: tests,
benchmarks, `engine_process: false`); `engine/process.py` runs the same core in a child process instead. `kv_geometry`
is the arithmetic both sides need before any model exists (the API process must know `max_model_len`).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from llmaas.engine.client import AsyncEngine
from llmaas.engine.core import EngineCore
from llmaas.engine.cpu import ThreadTuner
from llmaas.engine.kernels import bf16_linear
from llmaas.engine.kv_cache import KVCacheManager
from llmaas.engine.models.llama import Llama, ModelArgs
from llmaas.engine.runner import ModelRunner, kv_block_bytes
from llmaas.engine.scheduler import Scheduler

log = logging.getLogger(__name__)


def kv_geometry(spec: Any, config: Any, dtype: torch.dtype, num_blocks: int | None = None) -> tuple[int, int]:
    """(KV blocks, max_model_len) for a spec: blocks from `kv_cache_mb` (or `num_blocks`), the context capped so that
    one sequence alone always fits in the cache and never beyond a sliding window (we attend fully)."""
    args = ModelArgs.from_hf_config(config)
    num_blocks = num_blocks or max(spec.kv_cache_mb * 2**20 // kv_block_bytes(args, spec.block_size, dtype), 1)
    max_len = spec.max_model_len or args.max_position_embeddings
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        max_len = min(max_len, window)
    return num_blocks, min(max_len, num_blocks * spec.block_size)


def serves_adapters(spec: Any) -> bool:
    return bool(spec.allow_adapters and spec.max_loras >= 1)


def build_core(
    spec: Any,
    loaded: Any,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    num_blocks: int | None = None,
    num_threads: int | None = None,
) -> EngineCore:
    """An EngineCore for one ModelSpec and its LoadedModel, on `device` in `dtype`, ready to step.

    `num_blocks` overrides the KV size from `spec.kv_cache_mb` (tests force preemption with it); `num_threads` fixes
    the CPU intra-op threads (None: measured by ThreadTuner).
    """
    from llmaas.engine.detokenizer import IncrementalDetokenizer
    from llmaas.engine.sampler import Sampler

    device = torch.device(device)
    model = Llama.from_hf(loaded.config, loaded.tensors, device, dtype)
    if spec.quantization == "int8":
        if device.type != "cpu":
            raise ValueError(f"model {spec.name!r}: quantization=int8 runs on CPU only (this model is on {device})")
        log.info("engine: %d projections run on int8 weights", model.quantize_int8())
    elif blocks := model.use_weight_blocks():
        log.info("engine: %d projections run on the GGUF blocks their fp32 weights are", blocks)
    if model.pack_weights():
        ours = sum(getattr(m, "panels", None) is not None for m in model.modules())
        how = "AMX tiles" if bf16_linear.amx() else "AVX-512 BF16"
        log.info(
            "engine: projections run on packed bf16 weights (%d on our kernel's %s, the rest on oneDNN)", ours, how
        )
    threads = ThreadTuner(model, fixed=num_threads) if device.type == "cpu" else None
    if threads is not None and not threads.fixed:
        threads.retune()  # the first choice, before any request (later probes spread over forwards)
    num_blocks, max_len = kv_geometry(spec, loaded.config, dtype, num_blocks)
    lora = None
    if serves_adapters(spec):
        from llmaas.engine.lora import LoraManager

        lora = LoraManager(loaded.config, max_loras=spec.max_loras, device=device, dtype=dtype)
    tokenizer = loaded.tokenizer
    scheduler = Scheduler(
        KVCacheManager(num_blocks, spec.block_size),
        max_num_seqs=spec.max_num_seqs,
        max_num_batched_tokens=spec.max_num_batched_tokens,
        max_model_len=max_len,
        eos_token_ids=list(tokenizer.eos_token_ids),
    )
    runner = ModelRunner(
        model,
        num_blocks=num_blocks,
        block_size=spec.block_size,
        max_model_len=max_len,
        device=device,
        dtype=dtype,
        lora_manager=lora,
        threads=threads,
    )
    return EngineCore(
        runner,
        scheduler,
        Sampler(tokenizer),
        tokenizer,
        IncrementalDetokenizer,
        max_model_len=max_len,
        lora_manager=lora,
    )


def build_chat_engine(
    spec: Any,
    loaded: Any,
    device: torch.device | str,
    dtype: torch.dtype,
    *,
    num_blocks: int | None = None,
    num_threads: int | None = None,
) -> AsyncEngine:
    """A ready-to-start AsyncEngine: the core steps in a thread of this process."""
    core = build_core(spec, loaded, device, dtype, num_blocks=num_blocks, num_threads=num_threads)
    return AsyncEngine(
        core,
        model_name=spec.name,
        tokenizer=loaded.tokenizer,
        max_model_len=core.max_model_len,
        max_waiting=spec.max_waiting,
    )
