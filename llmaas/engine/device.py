"""Where a model runs and in what dtype, chosen from what the hardware really does (measured flags, not hopes).

bf16 is fast on CUDA and on CPUs with native bf16 dot products (AVX-512 BF16 or AMX); elsewhere torch emulates
it about 100× slower than fp32, so `auto` picks fp32 there. This module loads nothing.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import torch

from llmaas.config import ModelSpec

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_supports_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when /proc/cpuinfo's flags include avx512_bf16 or amx_bf16 (False where there is no /proc)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return any(f in flags for f in _BF16_FLAGS)
    return False


def pick_device(spec: ModelSpec) -> torch.device:
    """cuda when asked for (or `auto`) and present; cpu otherwise. Asking for cuda without one is an error."""
    if spec.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"model {spec.name!r} asks for device=cuda but no CUDA device is available")
        return torch.device("cuda")
    if spec.device == "auto" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(spec: ModelSpec, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on CUDA or bf16-capable CPUs, float32 elsewhere. Explicit choices are honoured, loudly."""
    if spec.dtype != "auto":
        dtype = _DTYPES[spec.dtype]
        if device.type == "cpu" and dtype in (torch.bfloat16, torch.float16) and not cpu_supports_bf16():
            log.warning(
                "model %r: dtype=%s on a CPU without native bf16 (no avx512_bf16/amx_bf16): torch emulates it, "
                "about 100x slower than float32. Use dtype=auto or float32 unless you mean it.",
                spec.name,
                spec.dtype,
            )
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32
