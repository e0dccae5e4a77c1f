"""kernels/bf16_linear: the bf16 matmul on packed panels (AVX-512 BF16 dot products, or AMX tiles where the CPU has
them), against the fp32 product of the same bf16 values."""

from __future__ import annotations

import pytest
import torch

from llmaas.engine.kernels import bf16_linear

pytestmark = pytest.mark.skipif(not bf16_linear.available(), reason="no AVX-512 BF16 here")


@pytest.mark.parametrize("shape", [(64, 2), (960, 576), (576, 1536), (192, 90)])
@pytest.mark.parametrize("rows", [1, 2, 5, 6, 7, 13, 16, 17, 31, 64, 130])  # AMX: blocks of 16, then the rest
def test_matches_the_fp32_product(shape: tuple[int, int], rows: int) -> None:
    torch.manual_seed(rows)
    w = torch.randn(shape).bfloat16()
    bias = torch.randn(shape[0]).bfloat16()
    x = torch.randn(rows, shape[1]).bfloat16()
    assert bf16_linear.fits(w)
    y = bf16_linear.linear(x, bf16_linear.pack(w), shape[0], bias)
    assert y.dtype == torch.bfloat16 and y.shape == (rows, shape[0])
    ref = torch.nn.functional.linear(x.float(), w.float(), bias.float())
    assert (y.float() - ref).abs().max() <= 1e-2 * ref.abs().max()


@pytest.mark.parametrize("rows", [1, 7, 32])
def test_fp32_output_is_the_same_sums_unrounded(rows: int) -> None:
    """The LM head's fp32 logits: the very sums the bf16 output rounds, so rounding them gives it bit for bit."""
    torch.manual_seed(rows)
    w, x = torch.randn(1024, 576).bfloat16(), torch.randn(rows, 576).bfloat16()
    panels = bf16_linear.pack(w)
    y32 = bf16_linear.linear(x, panels, 1024, None, torch.float32)
    assert y32.dtype == torch.float32 and y32.shape == (rows, 1024)
    assert torch.equal(y32.bfloat16(), bf16_linear.linear(x, panels, 1024, None))
    ref = torch.nn.functional.linear(x.float(), w.float())
    assert (y32 - ref).abs().max() <= 1e-3 * ref.abs().max()


def test_runs_on_amx_where_the_cpu_has_it() -> None:
    from llmaas.engine import kernels

    assert bf16_linear.amx() == ("amx_bf16" in kernels._cpu_flags().split())


def test_a_row_never_depends_on_its_batch() -> None:
    torch.manual_seed(0)
    w = torch.randn(1536, 576).bfloat16()
    panels = bf16_linear.pack(w)
    x = torch.randn(37, 576).bfloat16()
    batch = bf16_linear.linear(x, panels, 1536, None)
    for i in range(37):
        assert torch.equal(bf16_linear.linear(x[i : i + 1], panels, 1536, None), batch[i : i + 1])


def test_non_contiguous_input_and_no_rows() -> None:
    w = torch.randn(128, 64).bfloat16()
    panels = bf16_linear.pack(w)
    x = torch.randn(64, 10).bfloat16().t()  # [10, 64], not contiguous
    ref = torch.nn.functional.linear(x.float(), w.float())
    assert (bf16_linear.linear(x, panels, 128, None).float() - ref).abs().max() <= 1e-2 * ref.abs().max()
    assert bf16_linear.linear(x[:0], panels, 128, None).shape == (0, 128)


def test_shapes_the_panels_do_not_fit() -> None:
    assert not bf16_linear.fits(torch.zeros(100, 64, dtype=torch.bfloat16))  # out_features not a multiple of 64
    assert not bf16_linear.fits(torch.zeros(64, 63, dtype=torch.bfloat16))  # odd in_features
    assert not bf16_linear.fits(torch.zeros(64, 64))  # fp32


def test_a_tied_embedding_reads_its_rows_out_of_the_lm_heads_panels() -> None:
    from llmaas.engine.cpu import Linear, TiedEmbedding

    head = Linear(96, 320, bias=False).bfloat16()  # [vocab 320, dim 96]
    table = head.weight.detach().clone()
    assert head.pack() and head.panels is not None and head.weight.numel() == 0
    ids = torch.tensor([0, 319, 64, 7, 7, 255])
    assert torch.equal(TiedEmbedding(head)(ids), table[ids])
