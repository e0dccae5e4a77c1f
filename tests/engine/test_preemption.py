"""A KV cache far too small for the batch: requests wait or get preempted and recomputed — same outputs, no OOM."""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.client import AsyncEngine
from llmaas.engine.factory import build_chat_engine
from llmaas.engine.models.loader import load_model
from llmaas.engine.types import EngineRequest, FinishReason, SamplingParams, TokenEvent
from tests.support.tiny import build_tiny_llama


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CPU: OpenMP barriers make tiny ops crawl
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, Any]:
    d = build_tiny_llama(tmp_path_factory.mktemp("varied"), init_std=0.15, seed=3)  # varied greedy paths
    spec = ModelSpec(name="tiny", source=str(d), block_size=4, max_num_batched_tokens=64)
    return spec, load_model(spec, Settings(data_dir=d / "data", auth=False))


def run(eng: AsyncEngine, reqs: list[EngineRequest]) -> dict[str, list[TokenEvent]]:
    out: dict[str, list[TokenEvent]] = {r.request_id: [] for r in reqs}
    for r in reqs:
        eng.core.add_request(r)
    while eng.core.has_work():
        for ev in eng.core.step():
            out[ev.request_id].append(ev)
    return out


def workload() -> list[EngineRequest]:
    rng = random.Random(1)
    return [
        EngineRequest(
            f"r{i}",
            [rng.randrange(3, 259) for _ in range(rng.randrange(5, 40))],
            SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, logprobs=1),
        )
        for i in range(10)
    ]


def test_preemption_keeps_outputs_identical(loaded: Any) -> None:
    spec, lm = loaded
    roomy = build_chat_engine(spec, lm, "cpu", torch.float32)
    tight = build_chat_engine(spec, lm, "cpu", torch.float32, num_blocks=24)  # 96 tokens for ~500 wanted
    ref, got = run(roomy, workload()), run(tight, workload())
    assert roomy.core.scheduler.num_preemptions == 0
    assert tight.core.scheduler.num_preemptions > 0
    for rid, evs in ref.items():
        assert [t for e in got[rid] for t in e.token_ids] == [t for e in evs for t in e.token_ids]
        assert got[rid][-1].finish_reason == FinishReason.LENGTH
        # streaming never repeats tokens after a recompute: one event per output token
        assert [e.num_output_tokens for e in got[rid]] == list(range(1, 41))
        lp_ref = [lp.logprob for e in evs for lp in e.logprobs or []]
        lp_got = [lp.logprob for e in got[rid] for lp in e.logprobs or []]
        assert lp_ref == pytest.approx(lp_got, abs=1e-4)
    assert tight.stats().kv_blocks_used == 0 and tight.stats().running == 0


def test_prompt_larger_than_cache_is_refused_not_crashing(loaded: Any) -> None:
    spec, lm = loaded
    eng = build_chat_engine(spec, lm, "cpu", torch.float32, num_blocks=8)  # max_model_len becomes 32
    assert eng.max_model_len == 32
    out = run(
        eng,
        [
            EngineRequest("big", list(range(3, 60)), SamplingParams(max_tokens=4)),
            EngineRequest("ok", list(range(3, 20)), SamplingParams(max_tokens=100, ignore_eos=True)),
        ],
    )
    assert out["big"][-1].finish_reason == FinishReason.ERROR
    assert out["ok"][-1].finish_reason == FinishReason.LENGTH and out["ok"][-1].num_output_tokens == 32 - 17


def test_echo_prompt_logprobs_survive_preemption(loaded: Any) -> None:
    spec, lm = loaded
    prompts = [list(range(10, 40)), list(range(50, 80))]

    def reqs() -> list[EngineRequest]:  # fresh requests (and params) for each run
        def params() -> SamplingParams:
            return SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True, logprobs=0)

        return [EngineRequest(f"e{i}", p, params(), echo_prompt_logprobs=True) for i, p in enumerate(prompts)]

    ref = run(build_chat_engine(spec, lm, "cpu", torch.float32), reqs())
    tight = build_chat_engine(spec, lm, "cpu", torch.float32, num_blocks=18)
    got = run(tight, reqs())
    assert tight.core.scheduler.num_preemptions > 0
    for rid in ref:
        a, b = ref[rid][0].prompt_logprobs, got[rid][0].prompt_logprobs
        assert a is not None and b is not None and len(a) == len(b) == 30
        assert [x.logprob if x else None for x in a] == pytest.approx([x.logprob if x else None for x in b], abs=1e-4)
