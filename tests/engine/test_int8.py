"""Weight-only int8: the kernel computes exactly the matmul on the dequantized weights, and a model served with
`quantization: int8` generates what the same model with those dequantized weights generates (fp32)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from llmaas.engine.kernels import int8_linear
from tests.support.tiny import greedy_on_tiny

CPU = torch.device("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("K", [32, 96])
@pytest.mark.parametrize("M", [1, 3, 8, 9, 67])  # one block of rows, a block and a bit, many blocks
def test_int8_linear_is_the_matmul_on_dequantized_weights(
    dtype: torch.dtype, K: int, M: int, kernel_target: str
) -> None:
    if not int8_linear.available(dtype, CPU):
        pytest.skip("no C++ compiler here: the dequantized matmul runs")
    g = torch.Generator().manual_seed(K * M)
    weight, bias = torch.randn(40, K, generator=g), torch.randn(40, generator=g)
    q, scale = int8_linear.quantize(weight)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127 and scale.shape == (40, K // 32)
    error = (int8_linear.dequantize(q, scale, torch.float32) - weight).view(40, -1, 32).abs()
    assert (error <= scale[:, :, None] / 2 + 1e-6).all()  # each group rounded to nearest on its own scale
    x = torch.randn(M, K, generator=g).to(dtype)
    y = int8_linear.linear(x, q, scale, bias.to(dtype))
    reference = F.linear(x.float(), int8_linear.dequantize(q, scale, torch.float32), bias.to(dtype).float())
    assert y.dtype == dtype and y.shape == (M, 40)
    tol = 1e-5 if dtype == torch.float32 else 2**-7  # bf16: inputs, scaled weights and outputs rounded, ~0.4% each
    torch.testing.assert_close(y.float(), reference, rtol=tol, atol=tol * float(reference.abs().max()))


def _dequantized_copy(src: Path, dst: Path) -> Path:
    """The tiny model with every projection and the LM head replaced by dequantize(quantize(w)): what int8
    serving computes, in plain fp32 weights (per-row scales: fusing q/k/v or gate/up rows changes nothing)."""
    shutil.copytree(src, dst)
    tensors = load_file(str(src / "model.safetensors"))
    for name, w in tensors.items():
        if w.ndim == 2 and "embed_tokens" not in name:
            q, scale = int8_linear.quantize(w)
            tensors[name] = int8_linear.dequantize(q, scale, torch.float32)
    save_file(tensors, str(dst / "model.safetensors"))
    assert json.loads((dst / "config.json").read_text())["tie_word_embeddings"]  # the LM head is the embedding
    return dst


def test_int8_model_generates_what_its_dequantized_weights_generate(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmaas.config import ModelSpec, Settings
    from llmaas.engine.factory import build_core
    from llmaas.engine.models.loader import load_model

    if not int8_linear.available(torch.float32, CPU):
        pytest.skip("no C++ compiler here")
    dequantized = _dequantized_copy(tiny_model_dir, tmp_path / "dequantized")

    def generate(source: Path, quantization: str) -> dict[str, list[int]]:
        spec = ModelSpec(name="tiny", source=str(source), dtype="float32", kv_cache_mb=4, quantization=quantization)
        loaded = load_model(spec, Settings(data_dir=tmp_path))
        return greedy_on_tiny(build_core(spec, loaded, "cpu", torch.float32, num_threads=1), loaded.tokenizer)

    quantized = generate(tiny_model_dir, "int8")
    assert all(len(t) == 16 for t in quantized.values())
    assert quantized == generate(dequantized, "none")


def test_a_dimension_that_does_not_split_into_groups_stays_dense() -> None:
    from llmaas.engine.cpu import Linear

    layer = Linear(48, 8, bias=False)
    assert not layer.quantize_int8() and layer.qweight is None and layer.weight.shape == (8, 48)
    with pytest.raises(ValueError, match="multiple of 32"):
        int8_linear.quantize(layer.weight)


def test_int8_is_refused_off_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    from llmaas.config import ModelSpec, Settings
    from llmaas.engine.factory import build_core
    from llmaas.engine.models.loader import load_model

    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), dtype="float32", kv_cache_mb=4, quantization="int8")
    loaded = load_model(spec, Settings(data_dir=tmp_path))
    with pytest.raises(ValueError, match="CPU only"):
        build_core(spec, loaded, "meta", torch.float32, num_threads=1)
