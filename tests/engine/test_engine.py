"""AsyncEngine end to end on the tiny model: streaming, abort, backpressure, failure isolation, prefix cache, stats.

The step loop runs in its thread as in production; each test drives it with asyncio.run.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.client import AsyncEngine
from llmaas.engine.factory import build_chat_engine
from llmaas.engine.models.loader import load_model
from llmaas.engine.protocol import ChatEngine
from llmaas.engine.types import EngineRequest, FinishReason, SamplingParams, TokenEvent
from llmaas.errors import Overloaded


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CPU: OpenMP barriers make tiny ops crawl
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> tuple[ModelSpec, Any]:
    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), kv_cache_mb=2, block_size=4)
    return spec, load_model(spec, Settings(data_dir=tiny_model_dir / "data", auth=False))


def engine(loaded: tuple[ModelSpec, Any], **kw: Any) -> AsyncEngine:
    spec, lm = loaded
    return build_chat_engine(spec.model_copy(update=kw), lm, "cpu", torch.float32)


def req(rid: str, prompt: list[int], max_tokens: int = 16, **kw: Any) -> EngineRequest:
    extra = {k: kw.pop(k) for k in ("cache_salt", "adapter_id", "echo_prompt_logprobs") if k in kw}
    return EngineRequest(
        rid, prompt, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True, **kw), **extra
    )


async def collect(eng: AsyncEngine, r: EngineRequest) -> list[TokenEvent]:
    return [ev async for ev in eng.generate([r])]


def toks(evs: list[TokenEvent]) -> list[int]:
    return [t for e in evs for t in e.token_ids]


async def until(cond: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


def test_streams_one_event_per_token_and_implements_protocol(loaded: Any) -> None:
    eng = engine(loaded)
    assert isinstance(eng, ChatEngine)

    async def main() -> list[TokenEvent]:
        await eng.start()
        try:
            return await collect(eng, req("a", [5, 6, 7, 8, 9], max_tokens=12, logprobs=2))
        finally:
            await eng.shutdown()

    evs = asyncio.run(main())
    assert [len(e.token_ids) for e in evs] == [1] * 12
    assert [e.num_output_tokens for e in evs] == list(range(1, 13))
    assert evs[-1].finished and evs[-1].finish_reason == FinishReason.LENGTH
    assert not any(e.finished for e in evs[:-1])
    assert all(e.logprobs and len(e.logprobs[0].top) == 2 for e in evs)
    assert evs[0].num_prompt_tokens == 5


def test_concurrent_requests_match_sequential(loaded: Any) -> None:
    eng = engine(loaded)
    prompts = [[3 + (7 * i + j) % 250 for j in range(5 + 9 * i)] for i in range(8)]

    async def main() -> tuple[list, list]:
        await eng.start()
        try:
            alone = [toks(await collect(eng, req(f"s{i}", p))) for i, p in enumerate(prompts)]
            together = await asyncio.gather(*[collect(eng, req(f"c{i}", p)) for i, p in enumerate(prompts)])
            return alone, [toks(t) for t in together]
        finally:
            await eng.shutdown()

    alone, together = asyncio.run(main())
    assert alone == together


def test_abort_by_closing_stream_frees_blocks(loaded: Any) -> None:
    eng = engine(loaded)

    async def main() -> None:
        await eng.start()
        try:
            gen = eng.generate([req("a", list(range(3, 40)), max_tokens=10_000)])
            async for ev in gen:
                if ev.num_output_tokens >= 3:
                    break
            await gen.aclose()  # what the API does when the client disconnects
            await until(lambda: eng.stats().running == 0 and eng.stats().kv_blocks_used == 0)
            # explicit abort() too
            other = eng.generate([req("b", list(range(3, 40)), max_tokens=10_000)])
            first = await other.__anext__()
            assert not first.finished
            await eng.abort("b")
            rest = [ev async for ev in other]
            assert rest[-1].finished and rest[-1].finish_reason == FinishReason.ABORT
            await until(lambda: eng.stats().kv_blocks_used == 0)
        finally:
            await eng.shutdown()

    asyncio.run(main())


def test_cancelled_task_aborts(loaded: Any) -> None:
    eng = engine(loaded)

    async def main() -> None:
        await eng.start()
        try:
            task = asyncio.create_task(collect(eng, req("a", [4, 5, 6], max_tokens=10_000)))
            await until(lambda: eng.stats().running == 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await until(lambda: eng.stats().running == 0 and eng.stats().kv_blocks_used == 0)
        finally:
            await eng.shutdown()

    asyncio.run(main())


def test_full_waiting_queue_raises_overloaded(loaded: Any) -> None:
    eng = engine(loaded, max_waiting=2, max_num_seqs=1)

    async def main() -> None:
        await eng.start()
        try:
            running = eng.generate([req("r", [4, 5, 6], max_tokens=10_000)])
            await running.__anext__()  # seated: the only seat
            w1 = eng.generate([req("w1", [4, 5])])
            w2 = eng.generate([req("w2", [4, 6])])
            with pytest.raises(Overloaded) as exc:
                eng.generate([req("w3", [4, 7])])
            assert exc.value.retry_after and exc.value.status == 429
            await running.aclose()
            assert (await collect_iter(w1))[-1].finish_reason == FinishReason.LENGTH
            assert (await collect_iter(w2))[-1].finish_reason == FinishReason.LENGTH
        finally:
            await eng.shutdown()

    asyncio.run(main())


async def collect_iter(it: Any) -> list[TokenEvent]:
    return [ev async for ev in it]


def test_one_stream_per_call_and_a_refused_call_leaves_nothing_running(loaded: Any) -> None:
    """The n requests of a call share one stream; if one is refused at submit, the ones before it are aborted."""
    eng = engine(loaded, max_waiting=2, max_num_seqs=1)

    async def main() -> None:
        await eng.start()
        try:
            evs = await collect_iter(eng.generate([req("a", [4, 5, 6], max_tokens=4), req("b", [4, 5], max_tokens=3)]))
            assert {e.request_id for e in evs if e.finished} == {"a", "b"} and evs[-1].finished
            assert [len(toks([e for e in evs if e.request_id == r])) for r in "ab"] == [4, 3]
            assert all(e.arrival_time <= e.time for e in evs)  # the core's timestamps, for the latency metrics
            running = eng.generate([req("r", [4, 5, 6], max_tokens=10_000)])
            await running.__anext__()  # seated: the only seat
            with pytest.raises(Overloaded):
                eng.generate([req(f"w{i}", [4, 5]) for i in range(3)])  # two fit the queue, the third does not
            await running.aclose()
            await until(lambda: eng.stats().running == 0 and eng.stats().waiting == 0)
            assert (await collect(eng, req("w0", [4, 5], max_tokens=2)))[-1].finish_reason == FinishReason.LENGTH
        finally:
            await eng.shutdown()

    asyncio.run(main())


def test_warm_up_leaves_the_core_as_it_found_it(loaded: Any) -> None:
    """The engine process's warm-up request: nothing left running, no block held or cached, the same output after."""

    def run(core: Any, r: EngineRequest) -> list[TokenEvent]:
        core.add_request(r)
        evs: list[TokenEvent] = []
        while core.has_work():
            evs += core.step()
        return evs

    cold, warm = engine(loaded).core, engine(loaded).core
    warm.warm_up()
    assert not warm.has_work() and warm.scheduler.kv.num_used == 0
    prompt = list(range(8)) + [9, 10, 11]  # the warm-up's own prompt first: a cached block would be hit
    evs = run(warm, req("a", prompt, max_tokens=5))
    assert evs[-1].num_cached_tokens == 0
    assert toks(evs) == toks(run(cold, req("a", prompt, max_tokens=5)))


def test_failing_sequence_fails_alone(loaded: Any) -> None:
    """A sequence whose forward pass or sampling raises gets FinishReason.ERROR; its neighbours and the loop go on."""
    eng = engine(loaded)
    core = eng.core
    real_execute, real_sampler = core.runner.execute, core.sampler

    def execute(sched: Any) -> Any:
        if any(s.request.request_id == "bad-forward" for s in sched.seqs):
            raise RuntimeError("boom /secret/path")
        return real_execute(sched)

    def sampler(logits: Any, rows: Any) -> Any:
        if any(r.params.seed == 666 for r in rows):
            raise ValueError("bad row")
        return real_sampler(logits, rows)

    core.runner.execute, core.sampler = execute, sampler  # type: ignore[method-assign]

    async def main() -> list[list[TokenEvent]]:
        await eng.start()
        try:
            rs = [
                req("ok1", [5, 6, 7]),
                req("bad-forward", [5, 6, 8]),
                req("bad-sample", [5, 6, 9], seed=666),
                req("ok2", [5, 6, 10]),
            ]
            out = await asyncio.gather(*[collect(eng, r) for r in rs])
            out.append(await collect(eng, req("after", [9, 9])))
            return out
        finally:
            await eng.shutdown()

    ok1, bad_f, bad_s, ok2, after = asyncio.run(main())
    for good in (ok1, ok2, after):
        assert good[-1].finish_reason == FinishReason.LENGTH
    for bad in (bad_f, bad_s):
        assert bad[-1].finish_reason == FinishReason.ERROR
        assert bad[-1].error and "secret" not in bad[-1].error
    assert eng.stats().kv_blocks_used == 0


def test_crashing_step_fails_in_flight_and_keeps_serving(loaded: Any) -> None:
    eng = engine(loaded)
    real_schedule = eng.core.scheduler.schedule
    crashes = [1]

    def schedule() -> Any:
        if crashes:
            crashes.pop()
            raise RuntimeError("scheduler bug")
        return real_schedule()

    eng.core.scheduler.schedule = schedule  # type: ignore[method-assign]

    async def main() -> tuple[list[TokenEvent], list[TokenEvent]]:
        await eng.start()
        try:
            return await collect(eng, req("x", [5, 6])), await collect(eng, req("y", [5, 6]))
        finally:
            await eng.shutdown()

    x, y = asyncio.run(main())
    assert x[-1].finish_reason == FinishReason.ERROR
    assert y[-1].finish_reason == FinishReason.LENGTH


def test_invalid_requests_fail_cleanly(loaded: Any) -> None:
    eng = engine(loaded)

    async def main() -> list[list[TokenEvent]]:
        await eng.start()
        try:
            return [
                await collect(eng, r)
                for r in (
                    req("e", []),
                    req("v", [5, 100_000]),
                    req("ad", [5], adapter_id="nope"),
                    req("long", [5] * (eng.max_model_len + 1)),
                )
            ]
        finally:
            await eng.shutdown()

    for evs in asyncio.run(main()):
        assert len(evs) == 1 and evs[0].finish_reason == FinishReason.ERROR and evs[0].error


def test_prefix_cache_same_output_and_counted(loaded: Any) -> None:
    eng = engine(loaded)
    system = list(range(10, 50))  # 40 shared tokens = 10 blocks of 4

    async def main() -> list[list[TokenEvent]]:
        await eng.start()
        try:
            first = await collect(eng, req("a", system + [60, 61]))
            second = await collect(eng, req("b", system + [60, 61]))
            other_tenant = await collect(eng, req("c", system + [60, 61], cache_salt="tenant-2"))
            n = await asyncio.gather(*[collect(eng, req(f"n{i}", system + [70])) for i in range(3)])
            return [first, second, other_tenant, *n]
        finally:
            await eng.shutdown()

    first, second, other, *n = asyncio.run(main())
    assert toks(first) == toks(second) == toks(other)
    assert first[-1].num_cached_tokens == 0
    assert second[-1].num_cached_tokens == 40  # 41 tokens, the last always computed: 10 full blocks hit
    assert other[-1].num_cached_tokens == 0  # never across tenants
    assert all(evs[-1].num_cached_tokens >= 40 for evs in n)
    assert len({tuple(toks(e)) for e in n}) == 1
    s = eng.stats()
    assert s.prefix_cache_hits >= 40 * 4 and s.prefix_cache_queries > s.prefix_cache_hits


def test_stop_string_and_seeded_sampling(loaded: Any) -> None:
    eng = engine(loaded)
    tok = eng.tokenizer

    async def main() -> tuple[Any, ...]:
        await eng.start()
        try:
            base = await collect(eng, req("base", [5, 6, 7], max_tokens=20))
            text = "".join(e.text for e in base)
            stop = text[4:6]
            stopped = await collect(eng, req("stop", [5, 6, 7], max_tokens=20, stop=[stop]))
            s1 = await collect(eng, EngineRequest("s1", [5, 6], SamplingParams(max_tokens=20, temperature=1.0, seed=3)))
            s2 = await collect(eng, EngineRequest("s2", [5, 6], SamplingParams(max_tokens=20, temperature=1.0, seed=3)))
            return text, stop, stopped, s1, s2
        finally:
            await eng.shutdown()

    text, stop, stopped, s1, s2 = asyncio.run(main())
    assert tok is not None
    out = "".join(e.text for e in stopped)
    assert stopped[-1].finish_reason == FinishReason.STOP and stop not in out and text.startswith(out)
    assert toks(s1) == toks(s2)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a deprecated transformers helper
def test_lora_adapter_matches_peft_and_mixes_with_base(loaded: Any, tmp_path: Path) -> None:
    """Rows with an adapter get the PEFT model's greedy output, rows without get the base model's, in one batch."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    spec, lm = loaded
    base = AutoModelForCausalLM.from_pretrained(lm.source_dir, dtype=torch.float32).eval()
    base.generation_config.eos_token_id = None
    torch.manual_seed(0)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.3)  # PEFT initialises B to zero: make the adapter actually change something
    peft_model.save_pretrained(tmp_path / "adapter")
    prompt = [5, 17, 99, 120, 7]
    with torch.no_grad():
        ref_lora = peft_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, 5:].tolist()
        with peft_model.disable_adapter():
            ref_base = peft_model.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False)[0, 5:].tolist()
    assert ref_lora != ref_base

    eng = engine(loaded)
    eng.register_adapter("ad1", tmp_path / "adapter")

    async def main() -> list[list[TokenEvent]]:
        await eng.start()
        try:
            return list(
                await asyncio.gather(
                    collect(eng, req("l", prompt, 12, adapter_id="ad1")),
                    collect(eng, req("b", prompt, 12)),
                    collect(eng, req("l2", prompt, 12, adapter_id="ad1")),
                )
            )
        finally:
            await eng.shutdown()

    with_lora, without, again = asyncio.run(main())
    assert toks(with_lora) == ref_lora == toks(again)
    assert toks(without) == ref_base
