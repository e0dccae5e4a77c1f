"""EngineProcess: the engine core in a child process streams exactly what the in-process engine streams, survives
the child's death (open streams fail, a new child serves), aborts what is open at shutdown and never outlives the API process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.factory import build_chat_engine
from llmaas.engine.models.loader import load_model
from llmaas.engine.process import EngineProcess
from llmaas.engine.types import EngineRequest, FinishReason, SamplingParams


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelSpec, Settings, object]:
    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), dtype="float32", kv_cache_mb=4)
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), models=[spec], num_threads=1)
    return spec, settings, load_model(spec, settings)


def prompts(loaded: object) -> list[list[int]]:
    tok = loaded.tokenizer  # type: ignore[attr-defined]
    return [tok.apply_chat_template([{"role": "user", "content": f"Tell me about number {i}"}]) for i in range(4)]


async def collect(engine: object, req: EngineRequest) -> list:  # type: ignore[type-arg]
    return [ev async for ev in engine.generate([req])]  # type: ignore[attr-defined]


def test_same_tokens_as_in_process_and_clean_shutdown(setup: tuple) -> None:  # type: ignore[type-arg]
    spec, settings, loaded = setup
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, logprobs=2)
    reqs = lambda: [EngineRequest(f"r{i}", p, params) for i, p in enumerate(prompts(loaded))]  # noqa: E731

    async def run(engine: object) -> list[list]:  # type: ignore[type-arg]
        await engine.start()  # type: ignore[attr-defined]
        try:
            results = await asyncio.gather(*(collect(engine, r) for r in reqs()))
            endless = SamplingParams(max_tokens=10_000, temperature=0.0, ignore_eos=True)
            stream = engine.generate([EngineRequest("open", reqs()[0].prompt_token_ids, endless)])  # type: ignore[attr-defined]
            await stream.__anext__()
        finally:
            await engine.shutdown()  # type: ignore[attr-defined]
        rest = [ev async for ev in stream]  # a stream open at shutdown ends, aborted
        assert rest[-1].finished and rest[-1].finish_reason == FinishReason.ABORT
        return results

    local = asyncio.run(run(build_chat_engine(spec, loaded, "cpu", torch.float32, num_threads=1)))
    proc = EngineProcess(spec, loaded, torch.device("cpu"), torch.float32, settings)
    remote = asyncio.run(run(proc))
    for a, b in zip(local, remote):
        assert [t for ev in a for t in ev.token_ids] == [t for ev in b for t in ev.token_ids]
        assert "".join(ev.text for ev in a) == "".join(ev.text for ev in b)
        assert b[-1].finish_reason == FinishReason.LENGTH and b[-1].num_output_tokens == 12
        assert [lp.token_id for ev in b for lp in ev.logprobs] == [t for ev in b for t in ev.token_ids]
    assert proc._proc is None and proc.stats().running == 0


def test_constrained_requests_cross_the_process_boundary(setup: tuple) -> None:  # type: ignore[type-arg]
    """A compiled grammar does not pickle: it travels as xgrammar's JSON and is loaded in the engine process."""
    import json

    from llmaas.engine.structured import compile_grammar
    from llmaas.engine.types import GrammarSpec

    spec, settings, loaded = setup
    only_one = {
        "type": "object",
        "properties": {"a": {"const": "xy"}, "b": {"enum": [True]}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    grammar = compile_grammar(loaded.tokenizer, GrammarSpec("json_schema", json.dumps(only_one)))  # type: ignore[attr-defined]
    engine = EngineProcess(spec, loaded, torch.device("cpu"), torch.float32, settings)

    async def go() -> list[str]:
        await engine.start()
        try:
            reqs = [
                EngineRequest(
                    f"g{i}",
                    prompts(loaded)[i],
                    SamplingParams(max_tokens=48, temperature=1.0, seed=i, grammar=grammar, ignore_eos=True),
                )
                for i in range(3)
            ]
            runs = await asyncio.gather(*(collect(engine, r) for r in reqs))
            return ["".join(ev.text for ev in evs) for evs in runs]
        finally:
            await engine.shutdown()

    assert asyncio.run(go()) == ['{"a": "xy", "b": true}'] * 3


def test_child_death_fails_open_streams_then_serves_again(setup: tuple) -> None:  # type: ignore[type-arg]
    spec, settings, loaded = setup
    engine = EngineProcess(spec, loaded, torch.device("cpu"), torch.float32, settings)
    prompt = prompts(loaded)[0]

    async def go() -> None:
        await engine.start()
        try:
            first_pid = engine._proc.pid
            long = SamplingParams(max_tokens=10_000, temperature=0.0, ignore_eos=True)
            stream = engine.generate([EngineRequest("long", prompt, long)])
            await stream.__anext__()
            os.kill(first_pid, signal.SIGKILL)
            rest = [ev async for ev in stream]
            assert rest[-1].finished and rest[-1].finish_reason == FinishReason.ERROR and rest[-1].error
            assert not engine.ready  # /ready is 503 until the new child serves
            for _ in range(600):  # a new child starts (seconds: it imports torch and loads the model)
                if engine.ready:
                    break
                await asyncio.sleep(0.1)
            assert engine.ready and engine._proc.pid != first_pid
            short = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
            evs = await collect(engine, EngineRequest("after", prompt, short))
            assert evs[-1].finish_reason == FinishReason.LENGTH and evs[-1].num_output_tokens == 4
        finally:
            await engine.shutdown()

    asyncio.run(go())


def test_child_exits_when_the_api_process_is_killed(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, sys, torch
        from llmaas.config import ModelSpec, Settings
        from llmaas.engine.models.loader import load_model
        from llmaas.engine.process import EngineProcess
        spec = ModelSpec(name="tiny", source={str(tiny_model_dir)!r}, dtype="float32", kv_cache_mb=4)
        settings = Settings(data_dir={str(tmp_path)!r}, models=[spec], num_threads=1)
        async def main():
            e = EngineProcess(spec, load_model(spec, settings), torch.device("cpu"), torch.float32, settings)
            await e.start()
            print(e._proc.pid, flush=True)
            await asyncio.sleep(600)
        if __name__ == "__main__":
            asyncio.run(main())
    """)
    (tmp_path / "api.py").write_text(script)
    api = subprocess.Popen([sys.executable, str(tmp_path / "api.py")], stdout=subprocess.PIPE, text=True)
    try:
        child = int(api.stdout.readline())  # type: ignore[union-attr]
        api.kill()  # kill -9: no shutdown code runs
        api.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.1)
        assert not _alive(child), "the engine process outlived the API process"
    finally:
        api.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
