"""A layer's element-wise steps, each one pass over its rows (fused.cpp) instead of several eager torch ops.

A decode step of SmolLM2 ran ~45 eager ops per layer, ~1,350 per token; outside the matmuls each moves a few KB
and costs its dispatch, so at one stream they were a third of the step. Each function here has the torch code it
replaces as its fallback (another device, another dtype, no compiler), and they agree:

- `rope_write_kv` is bit-identical to the torch ops in fp32 and bf16 (same roundings, no FMA contraction), so it
  runs in both;
- `rms_norm`, `add_rms_norm` and `silu_mul` sum and exponentiate in a different order than torch: within one bf16
  ulp in bf16, a few fp32 ulps in fp32 (tested). They ran in bf16 only until fp32 projections moved to their GGUF
  blocks (kernels/block_linear), whose dot products add in another order too; with both, SmolLM2's greedy output is
  still token-identical to transformers in the parity tests, and to torch's own ops on 20 prompts x 64 tokens, while
  a decode step is ~1.1-1.4x faster on an AVX2 CPU (a scratch A/B at 1, 8 and 64 streams).

`ENABLED = False` forces the torch code (benchmarks compare the two in one run).
"""

from __future__ import annotations

import ctypes
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from llmaas.engine import kernels

ENABLED = True
_SUFFIX = {torch.float32: "f32", torch.bfloat16: "bf16"}
_I64, _F32, _PTR = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_SIGNATURES = {
    "rope_kv": [_PTR, _I64, _I64, _I64, _I64, _I64, _PTR, _PTR, _PTR, _I64, _PTR, _PTR, _PTR],
    "add_rms_norm": [_PTR, _PTR, _PTR, _PTR, _PTR, _I64, _I64, _F32],
    "silu_mul": [_PTR, _PTR, _I64, _I64],
}


@cache
def _function(name: str, dtype: torch.dtype) -> Any:
    lib = kernels.load("fused", extra_flags=("-ffp-contract=off",))
    if lib is None or dtype not in _SUFFIX:
        return None
    fn = getattr(lib, f"llmaas_{name}_{_SUFFIX[dtype]}")
    fn.argtypes, fn.restype = _SIGNATURES[name], None
    return fn


def _kernel(name: str, t: Tensor) -> Any:
    """The compiled function for `t`'s dtype, or None where the torch code must run."""
    if not ENABLED or t.device.type != "cpu":
        return None
    return _function(name, t.dtype)


def available(dtype: torch.dtype) -> bool:
    """Whether the kernels run for this dtype on CPU."""
    return _function("rope_kv", dtype) is not None


def rope_write_kv(
    qkv: Tensor,
    cos: Tensor,
    sin: Tensor,
    slots: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    n_heads: int,
    n_kv_heads: int,
) -> Tensor:
    """qkv [T, (H + 2 Hkv) D] -> q [T, H, D] rotated; rotated k and v written into the caches [Hkv, N, bs, D] at
    `slots` [T]. cos, sin: [T, D] (each token's rows of the rotary tables, HF's rotate_half layout)."""
    T, D = qkv.shape[0], k_cache.shape[-1]
    fn = _kernel("rope_kv", qkv)
    if fn is None or qkv.stride(1) != 1 or not (cos.is_contiguous() and sin.is_contiguous()):
        qk = _rotate(qkv[:, : (n_heads + n_kv_heads) * D].view(T, n_heads + n_kv_heads, D), cos, sin)
        q: Tensor
        q, k = qk.split([n_heads, n_kv_heads], dim=1)
        v = qkv[:, (n_heads + n_kv_heads) * D :].view(T, n_kv_heads, D)
        k_cache.view(n_kv_heads, -1, D).index_copy_(1, slots, k.transpose(0, 1))
        v_cache.view(n_kv_heads, -1, D).index_copy_(1, slots, v.transpose(0, 1))
        return q
    q = qkv.new_empty(T, n_heads, D)
    fn(
        qkv.data_ptr(),
        T,
        qkv.stride(0),
        n_heads,
        n_kv_heads,
        D,
        cos.data_ptr(),
        sin.data_ptr(),
        slots.data_ptr(),
        k_cache.shape[1] * k_cache.shape[2],  # slots per KV head: N blocks x block size
        k_cache.data_ptr(),
        v_cache.data_ptr(),
        q.data_ptr(),
    )
    return q


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    # x: [T, H, D]; cos, sin: [T, D]
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.unsqueeze(1) + torch.cat([-x2, x1], dim=-1) * sin.unsqueeze(1)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """weight * RMSNorm(x), normalized in fp32 and scaled in x's dtype (HF's LlamaRMSNorm)."""
    fn = _kernel("add_rms_norm", x)
    if fn is None or not x.is_contiguous():
        return weight * F.rms_norm(x.float(), weight.shape, eps=eps).to(x.dtype)
    normed = torch.empty_like(x)
    fn(x.data_ptr(), None, weight.data_ptr(), None, normed.data_ptr(), x.shape[0], x.shape[1], eps)
    return normed


def add_rms_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(h, rms_norm(h)) for h = x + delta: the residual stream and the next sublayer's input in one pass."""
    fn = _kernel("add_rms_norm", x)
    if fn is None or not (x.is_contiguous() and delta.is_contiguous()):
        h = x + delta
        return h, rms_norm(h, weight, eps)
    h, normed = torch.empty_like(x), torch.empty_like(x)
    fn(x.data_ptr(), delta.data_ptr(), weight.data_ptr(), h.data_ptr(), normed.data_ptr(), x.shape[0], x.shape[1], eps)
    return h, normed


def silu_mul(gate_up: Tensor) -> Tensor:
    """[T, 2I] rows of [gate | up] -> silu(gate) * up [T, I] (the SwiGLU activation)."""
    fn = _kernel("silu_mul", gate_up)
    inter = gate_up.shape[1] // 2
    if fn is None or not gate_up.is_contiguous():
        gate, up = gate_up.split([inter, inter], dim=-1)
        act: Tensor = F.silu(gate) * up
        return act
    out = gate_up.new_empty(gate_up.shape[0], inter)
    fn(gate_up.data_ptr(), out.data_ptr(), gate_up.shape[0], inter)
    return out
