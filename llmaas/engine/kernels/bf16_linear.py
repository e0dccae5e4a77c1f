"""bf16 projections on our own kernel (bf16_linear.cpp), on a weight packed once into panels of 64 output columns laid
out as vdpbf16ps takes its operands, which is also the weight-tile layout of AMX: AVX-512 BF16 dot products, or AMX
tiles where the CPU has them.

Why not oneDNN's packed matmul (what inductor's weight freezing uses)? On the Zen 4 CPU this was written on, a whole
SmolLM2 step's 121 projections ran 2.3x faster at 1 row, 2x at 8, 1.3x at 32, 1.15x at 64 and 1.05x at 256 rows
(a scratch benchmark, the two interleaved). At a few rows oneDNN read the weights at ~14 GB/s of the ~40 the memory
gives. The same kernel serves every row count, and a row's result never depends on its batch (bit for bit).

With AMX (a 2-core Xeon, `python bench/projections.py`, 2026-12-03): the tiles beat oneDNN's AMX matmul 1.3-1.4x at
1-32 rows (at one row oneDNN read the weights at ~19 GB/s of the ~28 the memory gives, the tiles at ~24), 1.13x at
64, 1.15x at 128, 1.03x at 256 and 1.22x at 512; the dot products alone would lose to oneDNN from 4 rows on. A
row's result never depends on its batch there either: all rows of a weight take the tiles.

Shapes the panels do not fit (out_features not a multiple of 64, odd in_features) stay on oneDNN.
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

import torch
from torch import Tensor

from llmaas.engine import kernels

ENABLED = True  # False: bf16 weights pack for oneDNN instead (benchmarks build both)
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


@cache
def _lib() -> Any:
    lib = kernels.load("bf16_linear")
    if lib is None or not lib.llmaas_bf16_linear_available():
        return None
    lib.llmaas_bf16_linear_pack.argtypes = [_PTR] * 2 + [_I64] * 2
    lib.llmaas_bf16_linear.argtypes = [_PTR] * 3 + [_I64] * 3
    lib.llmaas_bf16_linear_f32out.argtypes = [_PTR] * 3 + [_I64] * 3
    lib.llmaas_bf16_linear_cols.restype = _I64
    return lib


def available() -> bool:
    """True where the kernel is built with AVX-512 BF16 (and ENABLED)."""
    return ENABLED and _lib() is not None


def amx() -> bool:
    """True where the kernel runs on AMX tiles (built for them, and the OS lets this process use them)."""
    lib = _lib()
    return lib is not None and bool(lib.llmaas_bf16_linear_amx())


def fits(weight: Tensor) -> bool:
    """True if the kernel is built and the weight [N, K] fills whole panels (N a multiple of their columns, K even)."""
    lib, (n, k) = _lib(), weight.shape
    cpu_bf16 = weight.dtype == torch.bfloat16 and weight.device.type == "cpu"
    return lib is not None and cpu_bf16 and n % lib.llmaas_bf16_linear_cols() == 0 and k % 2 == 0


def pack(weight: Tensor) -> Tensor:
    """weight [N, K] bf16 -> its panels (bf16, N * K values); `available()` and `fits(weight)` must hold."""
    w = weight.detach().contiguous()
    panels = torch.empty(w.numel(), dtype=torch.bfloat16)
    _lib().llmaas_bf16_linear_pack(w.data_ptr(), panels.data_ptr(), *w.shape)
    return panels


def rows(panels: Tensor, out_features: int, ids: Tensor) -> Tensor:
    """Rows `ids` of the weight [out_features, K] that `panels` were packed from, [len(ids), K]: the same values (an
    embedding lookup on a tied LM head's panels)."""
    cols = _lib().llmaas_bf16_linear_cols()
    ids = ids.reshape(-1)
    picked = panels.view(out_features // cols, -1, cols, 2)[ids // cols, :, ids % cols, :]  # [n, K/2, 2]
    return picked.reshape(ids.numel(), -1)


def linear(
    x: Tensor, panels: Tensor, out_features: int, bias: Tensor | None, out_dtype: torch.dtype = torch.bfloat16
) -> Tensor:
    """x [M, K] bf16 @ W^T (+ bias) -> [M, out_features] in `out_dtype` (bf16, or fp32: the sums unrounded), W as
    packed by `pack`."""
    x = x.contiguous()
    M, K = x.shape
    y = x.new_empty(M, out_features, dtype=out_dtype)
    fn = _lib().llmaas_bf16_linear if out_dtype == torch.bfloat16 else _lib().llmaas_bf16_linear_f32out
    if M:
        fn(x.data_ptr(), panels.data_ptr(), y.data_ptr(), M, K, out_features)
    return y if bias is None else y + bias
