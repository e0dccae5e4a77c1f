"""Sampler: greedy, temperature, top-k/top-p/min-p, penalties, logit_bias, seeds and logprobs, batched per row."""

from __future__ import annotations

import math

import pytest
import torch

from llmaas.engine.kernels import sampling
from llmaas.engine.sampler import Sampler, SamplingRow, _draw, greedy_tokens, make_generator
from llmaas.engine.types import SamplingParams

V = 32


class FakeTokenizer:
    def token_text(self, token_id: int) -> str:
        return f"t{token_id}"


def sp(**kw: object) -> SamplingParams:
    return SamplingParams(max_tokens=16, **kw)  # type: ignore[arg-type]


def row(params: SamplingParams, out: list[int] | None = None, seed: int | None = None) -> SamplingRow:
    return SamplingRow(params, out or [], make_generator(seed) if seed is not None else None)


@pytest.fixture
def sampler() -> Sampler:
    return Sampler(FakeTokenizer())


def logits_batch(b: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, V, generator=torch.Generator().manual_seed(seed)) * 2


def test_all_greedy_is_argmax(sampler: Sampler) -> None:
    logits = logits_batch(4)
    res = sampler(logits, [row(sp(temperature=0.0)) for _ in range(4)])
    assert res.token_ids == logits.argmax(-1).tolist()
    assert res.logprobs == [None] * 4


def test_mixed_batch_greedy_rows_stay_greedy(sampler: Sampler) -> None:
    logits = logits_batch(3)
    rows = [row(sp(temperature=0.0)), row(sp(temperature=1.5), seed=1), row(sp(temperature=0.0, top_k=3))]
    res = sampler(logits, rows)
    assert res.token_ids[0] == int(logits[0].argmax()) and res.token_ids[2] == int(logits[2].argmax())


def test_seed_reproducible_whatever_the_neighbours(sampler: Sampler) -> None:
    logits = logits_batch(1, seed=3)
    p = sp(temperature=1.0)
    alone = [sampler(logits, [row(p, seed=42)]).token_ids[0] for _ in range(1)]
    gen = make_generator(42)
    seq_a = [sampler(logits, [SamplingRow(p, [], gen)]).token_ids[0] for _ in range(20)]
    gen_b = make_generator(42)
    batch = torch.cat([logits_batch(2, seed=9), logits])
    seq_b = [sampler(batch, [row(p), row(p, seed=7), SamplingRow(p, [], gen_b)]).token_ids[2] for _ in range(20)]
    assert seq_a == seq_b and seq_a[0] == alone[0]
    assert len(set(seq_a)) > 1  # it really samples


def test_temperature_distribution_matches_softmax(sampler: Sampler) -> None:
    base = torch.tensor([2.0, 1.0, 0.0, -1.0] + [-30.0] * (V - 4))
    n = 4000
    logits = base.repeat(n, 1)
    torch.manual_seed(0)
    res = sampler(logits, [row(sp(temperature=0.7))] * n)
    freq = torch.bincount(torch.tensor(res.token_ids), minlength=V).float() / n
    expect = torch.softmax(base / 0.7, -1)
    assert torch.allclose(freq[:4], expect[:4], atol=0.03)


@pytest.fixture(params=["kernel", "torch"])
def draw_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both implementations of the last stage: the CPU kernel (kernels/sampling) and the torch code."""
    if request.param == "kernel" and sampling.draw(torch.zeros(1, 4), torch.ones(1), torch.zeros(1)) is None:
        pytest.skip("no C++ compiler: the sampling kernel does not build here")
    monkeypatch.setattr(sampling, "ENABLED", request.param == "kernel")
    return str(request.param)


@pytest.mark.parametrize("u", [0.0, 0.49, 0.5, 1.0 - 2**-24, 1.0])
def test_draw_never_returns_a_zero_probability_token(u: float, draw_path: str) -> None:
    # Inverse transform at the edges of the uniform draw (1.0 stands for u * total rounding up to the total).
    logits = torch.tensor([[0.0, 0.5, 0.0, 0.0, 0.5, 0.0]]).log()  # -inf: masked out
    assert _draw(logits, [1.0], torch.tensor([u])).tolist() == [1 if u < 0.5 else 4]


def test_draw_over_many_blocks_matches_softmax(draw_path: str) -> None:
    # A vocabulary of many of the kernel's 256-entry blocks, masked tokens among them, temperature and greedy rows.
    vocab, n = 1000, 20000
    base = torch.full((vocab,), float("-inf"))
    base[[3, 255, 256, 700, 999]] = torch.tensor([1.0, 0.0, 2.0, -1.0, 0.5])
    u = torch.rand(n, generator=torch.Generator().manual_seed(0))
    tokens = _draw(base.repeat(n, 1), [0.7] * n, u)
    freq = torch.bincount(tokens, minlength=vocab).float() / n
    assert torch.allclose(freq, torch.softmax(base / 0.7, -1), atol=0.015)
    assert _draw(base.repeat(2, 1), [0.0, 0.0], u[:2]).tolist() == [256, 256]
    assert _draw(base.repeat(2, 1), [1e-40, 1e-38], u[:2]).tolist() == [256, 256]  # 1/t overflows: the argmax


def test_greedy_takes_the_first_maximum(draw_path: str) -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 3.0], [float("-inf")] * 3 + [-1.0], [float("-inf")] * 4, [2.0] * 4])
    assert greedy_tokens(logits).tolist() == [1, 3, 0, 0]


def test_kernel_and_torch_draws_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    logits = torch.randn(64, 49152, generator=torch.Generator().manual_seed(1)) * 3
    temps = [0.0, 0.3, 0.7, 1.0, 1.5] * 12 + [1.0] * 4
    u = torch.rand(64, generator=torch.Generator().manual_seed(2))
    kernel = sampling.draw(logits, torch.tensor(temps), u)
    if kernel is None:
        pytest.skip("no C++ compiler: the sampling kernel does not build here")
    monkeypatch.setattr(sampling, "ENABLED", False)
    reference = _draw(logits, temps, u)
    # They sum in different orders (torch's cumsum over 49k floats drifts by ~1e-6), so a row may differ only
    # where its uniform number lies within that of a boundary between two tokens: both then bracket it.
    differ = (kernel != reference).nonzero().flatten().tolist()
    assert len(differ) <= 2
    for i in differ:
        cdf = torch.softmax(logits[i].double() / temps[i], -1).cumsum(0)
        for tok in (int(kernel[i]), int(reference[i])):
            below = float(cdf[tok - 1]) if tok > 0 else 0.0
            assert below - 1e-5 <= float(u[i]) <= float(cdf[tok]) + 1e-5


def test_top_k_top_p_min_p_restrict_support(sampler: Sampler) -> None:
    base = torch.tensor([3.0, 2.9, 2.8, 2.7, 2.6] + [0.0] * (V - 5))
    n = 600
    logits = base.repeat(n, 1)
    probs = torch.softmax(base, -1)
    cases = {
        "top_k": (sp(temperature=1.0, top_k=2), {0, 1}),
        "top_p": (sp(temperature=1.0, top_p=float(probs[:3].sum()) - 1e-4), {0, 1, 2}),
        "min_p": (sp(temperature=1.0, min_p=float(probs[3] / probs[0]) + 1e-4), {0, 1, 2}),
        "top_k_and_p": (sp(temperature=1.0, top_k=4, top_p=float(probs[:2].sum()) - 1e-4), {0, 1}),
        "top_k_1": (sp(temperature=5.0, top_k=1), {0}),
    }
    for name, (p, allowed) in cases.items():
        torch.manual_seed(1)
        got = set(sampler(logits, [row(p)] * n).token_ids)
        assert got == allowed, name
    # different rows, different settings, one batch
    mixed = [row(cases["top_k"][0]), row(cases["top_p"][0]), row(sp(temperature=1.0))] * 200
    res = sampler(base.repeat(len(mixed), 1), mixed).token_ids
    assert set(res[0::3]) == {0, 1} and set(res[1::3]) == {0, 1, 2} and len(set(res[2::3])) > 5
    mixed_k = [row(sp(temperature=1.0, top_k=3)), row(sp(temperature=1.0))] * 300  # top-k only, one row unlimited
    res = sampler(base.repeat(len(mixed_k), 1), mixed_k).token_ids
    assert set(res[0::2]) == {0, 1, 2} and len(set(res[1::2])) > 5


def test_logit_bias_applies_to_greedy_and_sampled(sampler: Sampler) -> None:
    logits = logits_batch(2)
    target = int(logits[0].argmin())
    rows = [row(sp(temperature=0.0, logit_bias={target: 100.0})), row(sp(temperature=1.0, logit_bias={5: 100.0}))]
    assert sampler(logits, rows).token_ids == [target, 5]
    banned = int(logits[0].argmax())
    assert sampler(logits[:1], [row(sp(temperature=0.0, logit_bias={banned: -100.0}))]).token_ids[0] != banned


def test_presence_frequency_penalties() -> None:
    from llmaas.engine.sampler import _apply_penalties

    logits = torch.zeros(2, V)
    rows = [row(sp(presence_penalty=0.5, frequency_penalty=0.25), out=[3, 3, 4]), row(sp(), out=[3])]
    _apply_penalties(logits, rows)
    assert logits[0, 3] == pytest.approx(-0.5 - 0.5) and logits[0, 4] == pytest.approx(-0.5 - 0.25)
    assert logits[0, 5] == 0 and bool((logits[1] == 0).all())


def test_repetition_penalty_matches_transformers() -> None:
    from transformers import RepetitionPenaltyLogitsProcessor

    from llmaas.engine.sampler import _apply_penalties

    logits = logits_batch(1)
    prompt, out = [1, 2, 7], [7, 9]
    ours = logits.clone()
    _apply_penalties(ours, [SamplingRow(sp(repetition_penalty=1.3), out, None, prompt)])
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor([prompt + out]), logits.clone())
    assert torch.allclose(ours, theirs)


def test_greedy_with_penalty_avoids_repeat(sampler: Sampler) -> None:
    logits = torch.zeros(1, V)
    logits[0, 4] = 1.0
    logits[0, 6] = 0.9
    assert sampler(logits, [row(sp(temperature=0.0, frequency_penalty=1.0), out=[4])]).token_ids == [6]


def test_logprobs_are_the_models_distribution(sampler: Sampler) -> None:
    logits = logits_batch(3)
    rows = [row(sp(temperature=0.0, logprobs=3)), row(sp(temperature=2.0, logprobs=0), seed=0), row(sp())]
    res = sampler(logits, rows)
    raw = torch.log_softmax(logits, -1)
    lp0 = res.logprobs[0]
    assert lp0 is not None and lp0.token_id == res.token_ids[0] and lp0.token == f"t{lp0.token_id}"
    assert lp0.logprob == pytest.approx(float(raw[0].max()))
    top_ids = raw[0].topk(3).indices.tolist()
    assert [t for t, _, _ in lp0.top] == top_ids and [s for _, s, _ in lp0.top] == [f"t{t}" for t in top_ids]
    lp1 = res.logprobs[1]
    assert lp1 is not None and lp1.top == []
    assert lp1.logprob == pytest.approx(float(raw[1, res.token_ids[1]]))  # raw, not temperature-scaled
    assert res.logprobs[2] is None
    assert all(math.isfinite(v) for _, _, v in lp0.top)


def test_row_count_mismatch_raises(sampler: Sampler) -> None:
    with pytest.raises(ValueError):
        sampler(logits_batch(2), [row(sp())])
