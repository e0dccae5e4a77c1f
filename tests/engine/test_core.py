"""EngineCore.step without a model: a fake runner whose logits always favour `last token + 1`, the real sampler,
detokenizer and byte tokenizer (STYLE habit 3). Checks events, text, stop strings, aborts and stats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmaas.engine.core import EngineCore
from llmaas.engine.detokenizer import IncrementalDetokenizer
from llmaas.engine.kv_cache import KVCacheManager
from llmaas.engine.runner import RunnerOutput
from llmaas.engine.sampler import Sampler
from llmaas.engine.scheduler import Scheduler, SchedulerOutput
from llmaas.engine.tokenizer import HFTokenizer
from llmaas.engine.types import EngineRequest, FinishReason, SamplingParams, TokenEvent

V = 259


class CountingRunner:
    """Logits that make the next token `last + 1` (wrapping inside the byte range)."""

    def __init__(self) -> None:
        self.vocab_size = V
        self.device = torch.device("cpu")
        self.calls: list[list[tuple[str, int, int]]] = []

    def release(self, request_id: str) -> None:
        pass

    def execute(self, sched: SchedulerOutput) -> RunnerOutput:
        self.calls.append([(s.request.request_id, s.start, s.num_new) for s in sched.seqs])
        out = RunnerOutput(torch.empty(0), {}, {})
        rows = []
        for s in sched.seqs:
            if s.sample:
                out.sample_row[s.request.request_id] = len(rows)
                last = s.request.all_token_ids[s.start + s.num_new - 1]
                rows.append(3 + (last - 3 + 1) % (V - 3))
        logits = torch.zeros(len(rows), V)
        logits[torch.arange(len(rows)), torch.tensor(rows, dtype=torch.long)] = 100.0  # sampled or not, always it
        out.logits = logits
        return out


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> HFTokenizer:
    return HFTokenizer.from_pretrained(tiny_model_dir)


def make_core(tokenizer: HFTokenizer, budget: int = 32) -> EngineCore:
    kv = KVCacheManager(64, 4)
    sched = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=budget, max_model_len=200, eos_token_ids=[2])
    return EngineCore(
        CountingRunner(),
        sched,
        Sampler(tokenizer),
        tokenizer,
        IncrementalDetokenizer,  # type: ignore[arg-type]
        max_model_len=200,
    )


def drain(core: EngineCore) -> dict[str, list[TokenEvent]]:
    out: dict[str, list[TokenEvent]] = {}
    while core.has_work():
        for ev in core.step():
            out.setdefault(ev.request_id, []).append(ev)
    return out


def text_ids(tok: HFTokenizer, s: str) -> list[int]:
    return tok.encode(s)


def test_tokens_and_text_stream(tokenizer: HFTokenizer) -> None:
    core = make_core(tokenizer)
    core.add_request(EngineRequest("a", text_ids(tokenizer, "a"), SamplingParams(max_tokens=5)))
    evs = drain(core)["a"]
    assert "".join(e.text for e in evs) == "bcdef"
    assert evs[-1].finish_reason == FinishReason.LENGTH and evs[-1].num_output_tokens == 5
    assert core.stats().kv_blocks_used == 0 and core.stats().steps >= 5


def test_stop_string_cuts_text_and_finishes(tokenizer: HFTokenizer) -> None:
    core = make_core(tokenizer)
    core.add_request(EngineRequest("a", text_ids(tokenizer, "a"), SamplingParams(max_tokens=20, stop=["ef"])))
    evs = drain(core)["a"]
    assert "".join(e.text for e in evs) == "bcd"
    assert evs[-1].finish_reason == FinishReason.STOP


def test_chunked_prefill_in_core_and_abort_mid_prefill(tokenizer: HFTokenizer) -> None:
    core = make_core(tokenizer, budget=8)
    core.add_request(EngineRequest("long", text_ids(tokenizer, "x" * 30), SamplingParams(max_tokens=3)))
    core.step()
    core.step()
    runner = core.runner
    assert runner.calls == [[("long", 0, 8)], [("long", 8, 8)]]  # type: ignore[attr-defined]
    core.abort_request("long")
    evs = core.step()
    assert [(e.request_id, e.finish_reason) for e in evs] == [("long", FinishReason.ABORT)]
    assert core.stats().kv_blocks_used == 0 and not core.has_work()


def test_abort_before_first_step_and_unknown_abort(tokenizer: HFTokenizer) -> None:
    core = make_core(tokenizer)
    core.add_request(EngineRequest("a", [5, 6], SamplingParams(max_tokens=3)))
    core.abort_request("a")
    core.abort_request("never-existed")
    evs = core.step()
    assert [(e.request_id, e.finish_reason, e.num_output_tokens) for e in evs] == [("a", FinishReason.ABORT, 0)]


def test_eos_is_counted_not_shown(tokenizer: HFTokenizer) -> None:
    core = make_core(tokenizer)
    core.add_request(EngineRequest("a", [5], SamplingParams(max_tokens=5, logit_bias={2: 100.0})))
    evs = drain(core)["a"]
    assert evs[-1].finish_reason == FinishReason.STOP and evs[-1].token_ids == [2] and evs[-1].text == ""


def test_a_batch_request_yields_to_an_interactive_one_and_gives_the_same_output(tokenizer: HFTokenizer) -> None:
    """Through the core: an interactive request that arrives after batch ones gets its first token in its first step
    (the batch sequences are preempted for its seat) and every sequence's output is what it is alone."""
    from llmaas.engine.types import BATCH

    core = make_core(tokenizer, budget=16)
    core.scheduler.max_num_seqs = 2

    def params() -> SamplingParams:
        return SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)

    for i in range(2):
        core.add_request(EngineRequest(f"b{i}", [10 + i, 20, 30], params(), priority=BATCH))
    events = core.step()
    core.add_request(EngineRequest("i", [40, 50, 60], params()))
    events += (second := core.step())
    assert "i" in {e.request_id for e in second if e.token_ids} and core.scheduler.num_preemptions == 1
    out: dict[str, list[int]] = {}
    for e in events + [e for evs in drain(core).values() for e in evs]:
        out.setdefault(e.request_id, []).extend(e.token_ids)
    alone = make_core(tokenizer)
    alone.add_request(EngineRequest("b1", [11, 20, 30], params()))
    assert out["b1"] == [t for e in drain(alone)["b1"] for t in e.token_ids]  # recomputed after its preemption
