"""GGUF blocks under fp32 weights: recovered only when they rebuild every weight bit for bit (gguf-py's own
quantizer and dequantizer make the weights here), the kernel is the matmul on those weights, and a model whose
weights are such blocks generates what it generates on its dense fp32 weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize
from safetensors.torch import load_file, save_file

from llmaas.engine.kernels import block_linear
from tests.support.tiny import greedy_on_tiny

Q4_1, Q8_0 = GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0


def gguf_weight(shape: tuple[int, int], kind: GGMLQuantizationType, seed: int = 0) -> torch.Tensor:
    """fp32 weights as transformers loads a GGUF tensor of `kind`: quantized, then dequantized, by gguf-py."""
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.05
    return torch.from_numpy(dequantize(quantize(w, kind), kind).copy())


@pytest.fixture(params=["kernel", "torch"])
def block_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The C++ kernel, or torch's dequantize-and-matmul where it is not built."""
    if request.param == "kernel" and not block_linear.available():
        pytest.skip("no C++ compiler here")
    if request.param == "torch":
        monkeypatch.setattr(block_linear, "_lib", lambda: None)
    return request.param


@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
def test_blocks_rebuild_the_weight_bit_for_bit(kind: GGMLQuantizationType, block_path: str) -> None:
    w = gguf_weight((40, 96), kind)
    blocks = block_linear.recover(w)
    assert blocks is not None and (blocks.m is None) == (kind == Q8_0)
    assert blocks.shape == (40, 96) and blocks.d.shape == (40, 3)
    assert blocks.nbytes < w.numel() * w.element_size() / 3
    rebuilt = block_linear.dequantize(blocks)
    assert torch.equal(rebuilt.view(torch.int32), w.view(torch.int32))


@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
@pytest.mark.parametrize("M", [1, 3, 4, 5, 8, 9, 64, 65, 130])  # each path by row count, tiles and remainders
def test_the_kernel_is_the_matmul_on_those_weights(kind: GGMLQuantizationType, M: int, block_path: str) -> None:
    g = torch.Generator().manual_seed(M)
    w = gguf_weight((7, 64), kind, seed=M)  # 7 outputs: a group of 4 and a remainder of 3
    blocks = block_linear.recover(w)
    assert blocks is not None
    x, bias = torch.randn(M, 64, generator=g), torch.randn(7, generator=g)
    y = block_linear.linear(x, blocks, bias)
    assert y.shape == (M, 7) and y.dtype == torch.float32
    torch.testing.assert_close(y, F.linear(x, w, bias), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
def test_a_decode_row_gets_the_same_bits_alone_or_in_a_small_batch(kind: GGMLQuantizationType) -> None:
    """Up to the direct path's row count a row's logits never depend on which other streams share its step."""
    if not block_linear.available():
        pytest.skip("no C++ compiler here")
    blocks = block_linear.recover(gguf_weight((37, 96), kind))
    assert blocks is not None
    batch = torch.randn(block_linear._lib().llmaas_block_linear_direct_rows(), 96)
    batched = block_linear.linear(batch, blocks, None)
    for i in (0, 1, batch.shape[0] - 1):
        assert torch.equal(block_linear.linear(batch[i : i + 1], blocks, None), batched[i : i + 1])
    assert torch.equal(block_linear.linear(batch[:3], blocks, None), batched[:3])


@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
def test_many_rows_across_panels_slabs_and_depths(kind: GGMLQuantizationType, block_path: str) -> None:
    """A weight of many panels, rows in more than one chunk of slabs with a part slab last, K deeper than one pass."""
    w = gguf_weight((1000, 288), kind)
    blocks = block_linear.recover(w)
    assert blocks is not None
    x = torch.randn(150, 288)
    torch.testing.assert_close(block_linear.linear(x, blocks, None), F.linear(x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "weight",
    [
        torch.randn(8, 64),  # trained weights are no blocks
        gguf_weight((8, 64), Q4_1) * 1.0001,  # nearly: one block off by a rounding is enough
        gguf_weight((8, 64), Q4_1).bfloat16(),  # not fp32
        gguf_weight((8, 64), Q4_1)[:, :40].contiguous(),  # K not a multiple of 32
        torch.zeros(0, 64),
    ],
    ids=["random", "scaled", "bf16", "ragged", "empty"],
)
def test_other_weights_stay_dense(weight: torch.Tensor) -> None:
    assert block_linear.recover(weight) is None


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e30])
def test_a_hostile_value_in_a_block_is_no_block(bad: float) -> None:
    w = gguf_weight((4, 64), Q4_1)
    w[2, 37] = bad
    assert block_linear.recover(w) is None


@pytest.mark.parametrize("kind", [Q4_1, Q8_0])
def test_rows_looked_up_in_the_blocks_are_the_weight_rows_bit_for_bit(kind: GGMLQuantizationType) -> None:
    w = gguf_weight((50, 64), kind)
    blocks = block_linear.recover(w)
    assert blocks is not None
    ids = torch.tensor([[3, 0], [49, 3]])
    assert torch.equal(block_linear.rows(blocks, ids).view(torch.int32), w[ids.reshape(-1)].view(torch.int32))


def test_a_linear_on_blocks_drops_its_fp32_weight_unless_shared() -> None:
    from llmaas.engine.cpu import Linear

    layer = Linear(64, 6, bias=False)
    layer.weight.data = gguf_weight((6, 64), Q4_1)
    x = torch.randn(2, 64)
    expected = F.linear(x, layer.weight)
    assert layer.use_blocks() and layer.weight.numel() == 0
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    dense = Linear(64, 6, bias=False)
    assert not dense.use_blocks() and dense.blocks is None and dense.weight.shape == (6, 64)


def _gguf_copy(src: Path, dst: Path) -> Path:
    """The tiny model with every 2-D weight as a GGUF model's (projections Q4_1, the embedding Q8_0)."""
    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    for name, w in tensors.items():
        if w.ndim == 2 and w.shape[1] % 32 == 0:
            kind = Q8_0 if "embed_tokens" in name else Q4_1
            tensors[name] = torch.from_numpy(dequantize(quantize(w.float().numpy(), kind), kind).copy())
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_a_gguf_model_generates_what_its_dense_weights_generate(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmaas.config import ModelSpec, Settings
    from llmaas.engine.cpu import Linear, TiedEmbedding
    from llmaas.engine.factory import build_core
    from llmaas.engine.models.loader import load_model

    if not block_linear.available():
        pytest.skip("no C++ compiler here")
    source = _gguf_copy(tiny_model_dir, tmp_path / "gguf")

    def generate(enabled: bool) -> tuple[dict[str, list[int]], int]:
        monkeypatch.setattr(block_linear, "ENABLED", enabled)
        spec = ModelSpec(name="tiny", source=str(source), dtype="float32", kv_cache_mb=4)
        loaded = load_model(spec, Settings(data_dir=tmp_path))
        core = build_core(spec, loaded, "cpu", torch.float32, num_threads=1)
        linears = [m for m in core.runner.model.modules() if isinstance(m, Linear)]
        on_blocks = sum(m.blocks is not None for m in linears)
        assert on_blocks in (0, len(linears))  # every projection and the (tied) LM head, or none
        model = core.runner.model
        if on_blocks and model.args.tie_word_embeddings:  # one table left: the LM head's blocks
            assert isinstance(model.embed, TiedEmbedding) and model.lm_head.weight.numel() == 0
        return greedy_on_tiny(core, loaded.tokenizer), on_blocks

    on_blocks, n = generate(True)
    dense, none = generate(False)
    assert n > 0 and none == 0
    assert all(len(t) == 16 for t in on_blocks.values())
    assert on_blocks == dense
