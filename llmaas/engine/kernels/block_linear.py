"""fp32 projections on llama.cpp's Q4_1 / Q8_0 blocks (block_linear.cpp), for weights that are exactly such blocks.

A GGUF model (our default is Q4_1, its embedding Q8_0) reaches the engine dequantized to fp32: 4 bytes per weight,
all streamed from memory at every decode step, while every weight still is d * q + m for its block of 32. `recover`
finds those blocks again, and keeps them only if dequantizing them gives every fp32 weight back bit for bit: the
kernel then multiplies by exactly the weights transformers uses, reading 0.75 (Q4_1) or 1.125 (Q8_0) bytes per weight.
Any other weight (trained, merged, a non-GGUF model) fails the check and stays on the dense matmul. Products of more
than a few rows (prefill, many streams) are compute-bound: the kernel then dequantizes panels of the weight and
multiplies them on its own register tiles (bench/projections.py times them against MKL on the dense weights).
`ENABLED = False` keeps every weight dense (benchmarks build both).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from llmaas.engine import kernels

ENABLED = True
GROUP = 32
_I64, _PTR = ctypes.c_int64, ctypes.c_void_p
# fp16 neighbours of the first guess at a block's scale: the guess comes from the block's extremes, rounded once.
_ULP_STEPS = (0, 1, -1, 2, -2)


@dataclass
class Blocks:
    """A weight [N, K] as blocks of GROUP along K: W = (d * q) + m (Q4_1: q in [0, 15], two per byte in GGUF's
    order) or W = q * d (Q8_0: m is None, q int8)."""

    q: Tensor
    d: Tensor  # fp32 [N, K / GROUP], fp16 values
    m: Tensor | None  # fp32 [N, K / GROUP] (Q4_1), or None (Q8_0)
    shape: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.q, self.d, self.m) if t is not None)


@cache
def _lib() -> Any:
    lib = kernels.load("block_linear", ("-ffp-contract=off",))
    if lib is None:
        return None
    lib.llmaas_q4_1_linear.argtypes = [_PTR] * 5 + [_I64] * 3
    lib.llmaas_q8_0_linear.argtypes = [_PTR] * 4 + [_I64] * 3
    lib.llmaas_q4_1_dequantize.argtypes = [_PTR] * 4 + [_I64] * 2
    lib.llmaas_q8_0_dequantize.argtypes = [_PTR] * 3 + [_I64] * 2
    return lib


def available() -> bool:
    """Whether the engine should serve blocks here: the kernel is built, with its AVX2 path (elsewhere the plain
    loops compute the same, unmeasured against the dense matmul)."""
    lib = _lib()
    return ENABLED and lib is not None and bool(lib.llmaas_block_linear_avx2())


def recover(weight: Tensor) -> Blocks | None:
    """`weight` (fp32 [N, K]) as Q4_1 or else Q8_0 blocks, if they dequantize to it exactly; else None."""
    if weight.dtype != torch.float32 or weight.dim() != 2 or weight.shape[1] % GROUP or weight.numel() == 0:
        return None
    N, K = weight.shape
    b = weight.detach().reshape(-1, GROUP)  # [N * K / GROUP, GROUP]
    found = _recover_q4_1(b) or _recover_q8_0(b)
    if found is None:
        return None
    q, d, m = found
    return Blocks(q.view(N, -1), d.view(N, -1), None if m is None else m.view(N, -1), (N, K))


def _search(b: Tensor, guess: Tensor, lo: float, hi: float, offset: Tensor | None) -> tuple[Tensor, Tensor] | None:
    """Per block [G, GROUP], the first scale among `guess` and its fp16 neighbours whose rounded q (clamped to
    [lo, hi]) rebuild the block exactly: (scale [G], q [G, GROUP]), or None if some block has none. Each further
    candidate is tried on the blocks still unmatched only (almost every block takes the first)."""
    scale, q = torch.empty_like(guess), torch.empty_like(b)
    todo = torch.arange(b.shape[0])
    bits = guess.half().view(torch.int16)
    for step in _ULP_STEPS:
        blocks = b[todo]
        d = (bits[todo] + step).view(torch.float16).float()[:, None]  # below 0: NaN, which fits no block
        base = blocks if offset is None else blocks - offset[todo, None]
        dq = torch.where(d != 0, base / d, 0.0).round_().clamp_(lo, hi)
        rebuilt = dq * d if offset is None else d * dq + offset[todo, None]  # rounded as gguf-py does
        fits = (rebuilt == blocks).all(dim=1)
        scale[todo[fits]], q[todo[fits]] = d[fits, 0], dq[fits]
        todo = todo[~fits]
        if todo.numel() == 0:
            return scale, q
    return None


def _recover_q4_1(b: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """(packed q, d, m) per block of `b` [G, GROUP], or None."""
    m = b.amin(dim=1)
    if not torch.equal(m.half().float(), m):  # the block minimum is its offset, an fp16 (q = 0 there)
        return None
    found = _search(b, (b.amax(dim=1) - m) / 15, 0, 15, m)
    if found is None:
        return None
    d, q = found
    q8 = q.to(torch.uint8)
    packed = q8[:, : GROUP // 2] | (q8[:, GROUP // 2 :] << 4)
    return packed.contiguous(), d, m.contiguous()


def _recover_q8_0(b: Tensor) -> tuple[Tensor, Tensor, None] | None:
    """(q, d, None) per block of `b` [G, GROUP], or None."""
    found = _search(b, b.abs().amax(dim=1) / 127, -128, 127, None)
    if found is None:
        return None
    d, q = found
    return q.to(torch.int8).contiguous(), d, None


def dequantize(w: Blocks) -> Tensor:
    """The fp32 weight [N, K] (the kernel's own dequantization; torch's where the kernel is not built)."""
    lib = _lib()
    if lib is None:
        return _dequantize_torch(w)
    N, K = w.shape
    out = torch.empty(N, K)
    if w.m is None:
        lib.llmaas_q8_0_dequantize(w.q.data_ptr(), w.d.data_ptr(), out.data_ptr(), N, K)
    else:
        lib.llmaas_q4_1_dequantize(w.q.data_ptr(), w.d.data_ptr(), w.m.data_ptr(), out.data_ptr(), N, K)
    return out


def rows(w: Blocks, ids: Tensor) -> Tensor:
    """Rows `ids` of the fp32 weight, bit for bit: an embedding lookup on the blocks."""
    ids = ids.reshape(-1)
    picked = Blocks(w.q[ids], w.d[ids], None if w.m is None else w.m[ids], (ids.numel(), w.shape[1]))
    return _dequantize_torch(picked)


def _dequantize_torch(w: Blocks) -> Tensor:
    N, K = w.shape
    d = w.d[..., None]
    if w.m is None:
        return (w.q.view(N, -1, GROUP).float() * d).view(N, K)
    q = w.q.view(N, -1, GROUP // 2)
    q = torch.cat([q & 0x0F, q >> 4], dim=2).float()
    return (d * q + w.m[..., None]).view(N, K)


def linear(x: Tensor, w: Blocks, bias: Tensor | None) -> Tensor:
    """x [M, K] fp32 @ W^T (+ bias) -> [M, N]."""
    lib = _lib()
    if lib is None or x.dtype != torch.float32 or x.device.type != "cpu":
        return F.linear(x, dequantize(w).to(x), bias)
    M, K = x.shape
    N = w.shape[0]
    x = x.contiguous()
    y = x.new_empty(M, N)
    if w.m is None:
        lib.llmaas_q8_0_linear(x.data_ptr(), w.q.data_ptr(), w.d.data_ptr(), y.data_ptr(), M, K, N)
    else:
        lib.llmaas_q4_1_linear(x.data_ptr(), w.q.data_ptr(), w.d.data_ptr(), w.m.data_ptr(), y.data_ptr(), M, K, N)
    return y if bias is None else y + bias
