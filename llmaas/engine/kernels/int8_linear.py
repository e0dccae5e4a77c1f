"""Weight-only int8 projections (int8_linear.cpp): symmetric int8 in groups of 32 weights along the input dimension,
each group with its own fp32 scale (llama.cpp's Q8_0 layout: 1.125 bytes per weight), for decode.

A decode step reads every weight once per token, so at a few rows it is bound by memory bandwidth: int8 weights
read ~half the bytes of bf16 (~a quarter of fp32's). The kernel runs up to `KERNEL_ROWS` rows; a larger batch
(prefill chunks, many streams) is compute-bound, where the dense matmul wins: the weight is dequantized into a
scratch buffer reused by every layer (as big as the largest projection) and multiplied by oneDNN/MKL. So int8 pays
at low concurrency and costs a little at high.
"""

from __future__ import annotations

import ctypes
import threading
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from llmaas.engine import kernels

KERNEL_ROWS = 8  # measured: at 8 rows the kernel and the dense bf16 matmul are even
GROUP = 32  # weights per scale; the input dimension must be a multiple of it
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
_FN = {torch.float32: "llmaas_int8_linear_f32", torch.bfloat16: "llmaas_int8_linear_bf16"}


@cache
def _function(dtype: torch.dtype) -> Any:
    lib = kernels.load("int8_linear")
    if lib is None or dtype not in _FN:
        return None
    fn = getattr(lib, _FN[dtype])
    fn.argtypes, fn.restype = [_PTR] * (5 if dtype == torch.bfloat16 else 4) + [_I64] * 3, None
    fn.bf16_dot = bool(lib.llmaas_int8_has_bf16_dot())
    fn.dequantize = getattr(lib, _FN[dtype].replace("linear", "dequantize"))
    fn.dequantize.argtypes, fn.dequantize.restype = [_PTR] * 3 + [_I64] * 2, None
    return fn


_scratch = threading.local()  # per stepping thread: two engines in one process never share a buffer


def _dense(q: Tensor, scale: Tensor, dtype: torch.dtype, fn: Any) -> Tensor:
    """The dequantized weight in a scratch buffer shared by all layers (a step runs them one after another)."""
    n = q.numel()
    buffers: dict[torch.dtype, Tensor] = _scratch.__dict__.setdefault("buffers", {})
    buf = buffers.get(dtype)
    if buf is None or buf.numel() < n:
        buf = buffers[dtype] = torch.empty(n, dtype=dtype)
    w = buf[:n].view(q.shape)
    fn.dequantize(q.data_ptr(), scale.data_ptr(), w.data_ptr(), *q.shape)
    return w


def available(dtype: torch.dtype, device: torch.device) -> bool:
    return device.type == "cpu" and _function(dtype) is not None


def quantize(weight: Tensor) -> tuple[Tensor, Tensor]:
    """weight [N, K] (K a multiple of GROUP) -> (q int8 [N, K], scale fp32 [N, K / GROUP]), rounded to nearest:
    each group of GROUP weights ~= its scale * q."""
    N, K = weight.shape
    if K % GROUP:
        raise ValueError(f"int8 weights need an input dimension that is a multiple of {GROUP}, not {K}")
    w = weight.detach().float().view(N, K // GROUP, GROUP)
    scale = (w.abs().amax(dim=2) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, :, None]).clamp_(-127, 127).to(torch.int8)
    return q.view(N, K).contiguous(), scale.contiguous()


def dequantize(q: Tensor, scale: Tensor, dtype: torch.dtype) -> Tensor:
    N, K = q.shape
    return (q.view(N, K // GROUP, GROUP).float() * scale[:, :, None]).view(N, K).to(dtype)


def linear(x: Tensor, q: Tensor, scale: Tensor, bias: Tensor | None) -> Tensor:
    """x [M, K] @ dequantize(q, scale)^T (+ bias) -> [M, N] in x's dtype."""
    fn = _function(x.dtype) if x.device.type == "cpu" else None
    if fn is None:
        return F.linear(x, dequantize(q, scale, x.dtype), bias)
    if x.shape[0] > KERNEL_ROWS:
        return F.linear(x, _dense(q, scale, x.dtype, fn), bias)
    M, K = x.shape
    x = x.contiguous()
    y = x.new_empty(M, q.shape[0])
    if x.dtype == torch.float32:
        fn(x.data_ptr(), q.data_ptr(), scale.data_ptr(), y.data_ptr(), M, K, q.shape[0])
    elif fn.bf16_dot:  # bf16 activations straight into vdpbf16ps
        fn(None, x.data_ptr(), q.data_ptr(), scale.data_ptr(), y.data_ptr(), M, K, q.shape[0])
    else:
        xf = x.float()  # held: a temporary's memory would be freed before the call
        fn(xf.data_ptr(), None, q.data_ptr(), scale.data_ptr(), y.data_ptr(), M, K, q.shape[0])
    return y if bias is None else y + bias
