"""The hand-written CPU kernels: paged attention (decodes and prefill rows) equals attention over gathered K/V (fp32
and bf16 storage), the fused element-wise ops equal the torch ops they replace, the engine's tokens do not depend on
which path runs, and a machine without a compiler keeps the torch path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmaas.engine import kernels
from llmaas.engine.kernels import fused
from llmaas.engine.kernels.paged_attention import available, paged_attention

CPU = torch.device("cpu")


def reference(
    q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, table: torch.Tensor, lens: torch.Tensor, scale: float
) -> torch.Tensor:
    Hkv, _, bs, D = kc.shape
    G = q.shape[1] // Hkv
    out = torch.empty_like(q, dtype=torch.float32)
    for s in range(q.shape[0]):
        n = int(lens[s])
        k = kc[:, table[s]].reshape(Hkv, -1, D)[:, :n].float()
        v = vc[:, table[s]].reshape(Hkv, -1, D)[:, :n].float()
        p = (q[s].float().view(Hkv, G, D) @ k.transpose(-1, -2) * scale).softmax(-1)
        out[s] = (p @ v).reshape(-1, D)
    return out


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("G,D", [(3, 64), (1, 32), (4, 128)])
def test_paged_decode_equals_gathered_attention(
    dtype: torch.dtype, tol: float, G: int, D: int, kernel_target: str
) -> None:
    if not available(dtype, CPU, G, D):
        pytest.skip("no C++ compiler here: the torch path runs")
    g = torch.Generator().manual_seed(G * D)
    Hkv, N, bs, S = 2, 64, 16, 9
    kc = torch.randn(Hkv, N, bs, D, generator=g).to(dtype)
    vc = torch.randn(Hkv, N, bs, D, generator=g).to(dtype)
    lens = torch.tensor([1, 2, 15, 16, 17, 33, 100, 64, 5])  # block edges, one key, a long one
    nb = int(-(-lens.max() // bs))
    table = torch.stack([torch.randperm(N, generator=g)[:nb] for _ in range(S)])  # blocks anywhere, any order
    q = torch.randn(S, Hkv * G, D, generator=g).to(dtype)
    out = paged_attention(q, kc, vc, table, lens, D**-0.5)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.float(), reference(q, kc, vc, table, lens, D**-0.5), atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_paged_prefill_rows_are_causal_attention_over_their_sequence(
    dtype: torch.dtype, tol: float, kernel_target: str
) -> None:
    """A mixed batch in one call: two decodes and two prefill chunks (one from position 0, one after 21 cached
    tokens), each chunk's rows on its sequence's table row, row t seeing keys up to its own position."""
    if not available(dtype, CPU, 3, 64):
        pytest.skip("no C++ compiler here: the torch path runs")
    g = torch.Generator().manual_seed(7)
    Hkv, G, D, N, bs = 3, 3, 64, 64, 16
    kc = torch.randn(Hkv, N, bs, D, generator=g).to(dtype)
    vc = torch.randn(Hkv, N, bs, D, generator=g).to(dtype)
    chunks = [(40, 1), (0, 19), (7, 1), (21, 30)]  # (start, rows) per sequence
    nb = max(-(-(s + n) // bs) for s, n in chunks)
    table = torch.stack([torch.randperm(N, generator=g)[:nb] for _ in chunks])
    row_seq = torch.tensor([i for i, (_, n) in enumerate(chunks) for _ in range(n)])
    lens = torch.tensor([p + 1 for s, n in chunks for p in range(s, s + n)])
    q = torch.randn(len(lens), Hkv * G, D, generator=g).to(dtype)
    out = paged_attention(q, kc, vc, table, lens, 0.125, row_seq)
    want = reference(q, kc, vc, table[row_seq], lens, 0.125)
    torch.testing.assert_close(out.float(), want, atol=tol, rtol=tol)


def test_engine_tokens_do_not_depend_on_the_attention_path(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmaas.config import ModelSpec, Settings
    from llmaas.engine.factory import build_core
    from llmaas.engine.models.loader import load_model
    from llmaas.engine.types import EngineRequest, SamplingParams

    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), dtype="float32", kv_cache_mb=4)
    loaded = load_model(spec, Settings(data_dir=tmp_path))
    tok = loaded.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": "x " * n}]) for n in (1, 5, 40, 90)]

    def run(paged: bool) -> dict[str, list[int]]:
        core = build_core(spec, loaded, "cpu", torch.float32, num_threads=1)
        if paged and not (core.runner.paged_kernel and fused.available(torch.float32)):
            pytest.skip("no C++ compiler here: the torch path runs")
        core.runner.paged_kernel = fused.ENABLED = paged
        for i, p in enumerate(prompts):
            core.add_request(EngineRequest(f"r{i}", p, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)))
        out: dict[str, list[int]] = {}
        while core.has_work():
            for ev in core.step():
                out.setdefault(ev.request_id, []).extend(ev.token_ids)
        return out

    try:
        assert run(True) == run(False)
    finally:
        fused.ENABLED = True


def _with_and_without_kernels(fn):  # type: ignore[no-untyped-def]
    try:
        fused.ENABLED = True
        kernel = fn()
        fused.ENABLED = False
        return kernel, fn()
    finally:
        fused.ENABLED = True


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rope_and_kv_write_are_bit_identical_to_torch(dtype: torch.dtype, kernel_target: str) -> None:
    if not fused.available(dtype):
        pytest.skip("no C++ compiler here: the torch path runs")
    g = torch.Generator().manual_seed(3)
    T, H, Hkv, D = 11, 6, 2, 32
    qkv = torch.randn(T, 40, (H + 2 * Hkv) * D, generator=g).to(dtype)[:, 3]  # rows with a stride, like a slice
    cos, sin = (torch.randn(T, D, generator=g).to(dtype) for _ in range(2))
    slots = torch.randperm(64, generator=g)[:T]

    def run() -> tuple[torch.Tensor, ...]:
        kc, vc = torch.zeros(Hkv, 4, 16, D, dtype=dtype), torch.zeros(Hkv, 4, 16, D, dtype=dtype)
        return fused.rope_write_kv(qkv, cos, sin, slots, kc, vc, H, Hkv), kc, vc

    for a, b in zip(*_with_and_without_kernels(run)):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "dtype,rtol,differ",
    [(torch.bfloat16, 2**-7, 1e-3), (torch.float32, 1e-6, 1.0)],  # bf16: one ulp, almost all bit-identical
)
def test_fused_norm_and_activation_match_torch(
    dtype: torch.dtype, rtol: float, differ: float, kernel_target: str
) -> None:
    if not fused.available(dtype):
        pytest.skip("no C++ compiler here: the torch path runs")
    g = torch.Generator().manual_seed(4)
    x, delta = (torch.randn(37, 576, generator=g).to(dtype) for _ in range(2))
    weight = torch.randn(576, generator=g).to(dtype)
    gate_up = (torch.randn(37, 2 * 1536, generator=g) * 6).to(dtype)
    assert fused._kernel("add_rms_norm", x) is not None and fused._kernel("silu_mul", x) is not None
    kernel, reference = _with_and_without_kernels(
        lambda: (*fused.add_rms_norm(x, delta, weight, 1e-5), fused.rms_norm(x, weight, 1e-5), fused.silu_mul(gate_up))
    )
    for a, b in zip(kernel, reference):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        torch.testing.assert_close(a.float(), b.float(), rtol=rtol, atol=1e-6)
        assert (a != b).float().mean() <= differ


def test_no_compiler_keeps_the_torch_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMAAS_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert kernels.load.__wrapped__("paged_attention") is None  # type: ignore[attr-defined]
    monkeypatch.setenv("CXX", "false")  # a compiler that fails
    assert kernels.load.__wrapped__("paged_attention") is None  # type: ignore[attr-defined]
    assert not list(tmp_path.glob("*.so"))
