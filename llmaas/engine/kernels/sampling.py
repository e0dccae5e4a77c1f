"""The sampler's last stage, softmax at a temperature and one draw per row (or the argmax), as one pass per row
(sampling.cpp).

Same draw as the torch code in engine/sampler.py (inverse transform of one uniform number per row), computed in a
different order (exp of max-shifted logits, block sums), so a row can come out differently only where its uniform
number falls within rounding of a boundary between two tokens. `ENABLED = False` forces the torch code.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

import torch
from torch import Tensor

from llmaas.engine import kernels

ENABLED = True
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_SIGNATURES = {"sample_rows": [_PTR, _I64, _I64, _PTR, _PTR, _PTR], "argmax_rows": [_PTR, _I64, _I64, _PTR]}


@cache
def _compiled(name: str) -> Any:
    lib = kernels.load("sampling")
    if lib is None:
        return None
    fn = getattr(lib, f"llmaas_{name}")
    fn.argtypes, fn.restype = _SIGNATURES[name], None
    return fn


def _function(name: str, logits: Tensor) -> Any:
    if not ENABLED or logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.dim() != 2:
        return None
    return _compiled(name)


def argmax(logits: Tensor) -> Tensor | None:
    """logits [B, V] float32 -> each row's first maximum [B] (int64); None where the kernel does not run."""
    fn = _function("argmax_rows", logits)
    if fn is None:
        return None
    logits = logits.contiguous()
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    fn(logits.data_ptr(), logits.shape[0], logits.shape[1], out.data_ptr())
    return out


def draw(logits: Tensor, temperature: Tensor, u: Tensor) -> Tensor | None:
    """logits [B, V] float32, temperature [B] (0 = argmax), u [B] uniforms in [0, 1) -> token ids [B] (int64);
    None where the kernel does not run (another device or dtype, no compiler): the caller's torch code runs."""
    fn = _function("sample_rows", logits)
    if fn is None:
        return None
    logits = logits.contiguous()
    temperature = temperature.to(torch.float32).contiguous()
    u = u.to(torch.float32).contiguous()
    out = torch.empty(logits.shape[0], dtype=torch.int64)
    fn(logits.data_ptr(), logits.shape[0], logits.shape[1], temperature.data_ptr(), u.data_ptr(), out.data_ptr())
    return out
