"""Constrained decoding: grammar masks over a byte tokenizer, the batched sampler with mixed constrained and free rows,
and the engine (tiny random model) producing only what the schema allows — exactly, when only one output fits."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch

from llmaas.config import ModelSpec, Settings
from llmaas.engine.client import AsyncEngine
from llmaas.engine.factory import build_chat_engine
from llmaas.engine.models.loader import load_model
from llmaas.engine.sampler import Sampler, SamplingRow, make_generator
from llmaas.engine.structured import GrammarState, apply_masks, compile_grammar
from llmaas.engine.types import EngineRequest, FinishReason, GrammarError, GrammarSpec, SamplingParams
from tests.support.fakes import FakeTokenizer

TOK = FakeTokenizer()  # byte-level: id = byte + 3; 0..2 special, 2 = EOS
V = TOK.vocab_size
COLOR = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green"]}, "n": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["color", "n"],
    "additionalProperties": False,
}
ONLY_ONE = {
    "type": "object",
    "properties": {"a": {"const": "xy"}, "b": {"enum": [True]}},
    "required": ["a", "b"],
    "additionalProperties": False,
}


def schema(s: dict[str, Any]) -> Any:
    return compile_grammar(TOK, GrammarSpec("json_schema", json.dumps(s)))


def allowed(state: GrammarState) -> set[int]:
    logits = torch.zeros(1, V)
    apply_masks(logits, [state])
    return {i for i in range(V) if logits[0, i] != float("-inf")}


def test_mask_follows_the_grammar_on_a_byte_vocabulary() -> None:
    st = GrammarState(schema(COLOR))
    assert allowed(st) == {ord("{") + 3}
    for ch in '{"color": "':
        assert st.accept(ord(ch) + 3)
    assert allowed(st) == {ord("r") + 3, ord("g") + 3}
    for ch in 'green", "n": 7}':
        assert st.accept(ord(ch) + 3)
    assert allowed(st) == {2}  # complete: only EOS
    assert not st.terminated and st.accept(2) and st.terminated


def test_refused_token_and_specials_are_masked() -> None:
    st = GrammarState(schema(COLOR))
    assert not st.accept(ord("x") + 3)
    assert not ({0, 1} & allowed(st))  # specials never appear inside a grammar


def test_compile_is_cached_by_spec_and_salt_and_bad_schemas_raise() -> None:
    a, b = schema(COLOR), schema(COLOR)
    assert a is b
    assert compile_grammar(TOK, GrammarSpec("json_schema", json.dumps(COLOR)), salt="tenant-b") is not a
    with pytest.raises(GrammarError):
        schema({"type": "integer", "minimum": 5, "maximum": 1})
    with pytest.raises(GrammarError):
        compile_grammar(TOK, GrammarSpec("json_schema", "{not json"))


def test_batched_sampler_masks_only_constrained_rows() -> None:
    sampler = Sampler(TOK)
    g = schema(COLOR)
    logits = torch.randn(4, V, generator=torch.Generator().manual_seed(0)) * 3
    rows = [
        SamplingRow(
            SamplingParams(max_tokens=8, temperature=t),
            [],
            make_generator(i),
            grammar=GrammarState(g) if i % 2 == 0 else None,
        )
        for i, t in enumerate([0.0, 0.0, 1.0, 1.0])
    ]
    expected_free = logits[1].argmax().item()
    res = sampler(logits.clone(), rows)
    assert res.token_ids[0] == res.token_ids[2] == ord("{") + 3
    assert res.token_ids[1] == expected_free


def test_sampler_loop_with_mixed_rows_always_yields_valid_json() -> None:
    sampler, g = Sampler(TOK), schema(COLOR)
    gen = torch.Generator().manual_seed(1)
    rows = [
        SamplingRow(
            SamplingParams(max_tokens=64, temperature=1.0, logprobs=0 if i == 0 else None),
            [],
            make_generator(i),
            grammar=GrammarState(g) if i < 3 else None,
        )
        for i in range(6)
    ]
    outs: list[list[int]] = [[] for _ in rows]
    for _ in range(40):
        res = sampler(torch.randn(len(rows), V, generator=gen) * 4, rows)
        for i, (r, t) in enumerate(zip(rows, res.token_ids)):
            if r.grammar is not None and not r.grammar.terminated:
                assert r.grammar.accept(t)
                outs[i].append(t)
    for i in range(3):
        assert rows[i].grammar is not None and rows[i].grammar.terminated
        jsonschema.validate(json.loads(TOK.decode(outs[i])), COLOR)


def test_masks_when_the_logits_are_wider_than_the_vocabulary() -> None:
    st = GrammarState(schema(COLOR))
    logits = torch.zeros(2, V + 64)
    apply_masks(logits, [None, st])
    assert (logits[0] == 0).all()
    assert torch.isinf(logits[1, V:]).all() and (logits[1] == 0).sum() == 1


# --- the engine --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> AsyncEngine:
    spec = ModelSpec(name="tiny", source=str(tiny_model_dir), kv_cache_mb=2, block_size=4)
    loaded = load_model(spec, Settings(data_dir=tiny_model_dir / "data", auth=False))
    return build_chat_engine(spec, loaded, "cpu", torch.float32)


async def _run(eng: AsyncEngine, reqs: list[EngineRequest]) -> list[tuple[str, FinishReason | None]]:
    await eng.start()
    try:

        async def one(r: EngineRequest) -> tuple[str, FinishReason | None]:
            evs = [e async for e in eng.generate([r])]
            return "".join(e.text for e in evs), evs[-1].finish_reason

        return list(await asyncio.gather(*(one(r) for r in reqs)))
    finally:
        await eng.shutdown()


def test_engine_mixed_batch_constrained_rows_validate(engine: AsyncEngine) -> None:
    tok = engine.tokenizer
    g = tok.compile_grammar(GrammarSpec("json_schema", json.dumps(COLOR)))
    one = tok.compile_grammar(GrammarSpec("json_schema", json.dumps(ONLY_ONE)))
    prompt = tok.encode("hello there")
    reqs = []
    for i in range(8):
        grammar = [g, None, one, None][i % 4]
        params = SamplingParams(
            max_tokens=48, temperature=[0.0, 1.0][i % 2], seed=i, grammar=grammar, ignore_eos=grammar is None or i == 2
        )
        reqs.append(EngineRequest(f"s{i}", prompt, params))
    out = asyncio.run(_run(engine, reqs))
    for i, (text, reason) in enumerate(out):
        if i % 4 == 0:
            assert reason == FinishReason.STOP, text
            jsonschema.validate(json.loads(text), COLOR)
        elif i % 4 == 2:  # only one output satisfies it, also at temperature 1 and with ignore_eos
            assert (text, reason) == ('{"a": "xy", "b": true}', FinishReason.STOP)
        else:
            assert reason == FinishReason.LENGTH  # free rows are untouched: random bytes to max_tokens


def test_bounded_strings_refuse_raw_control_characters() -> None:
    st = GrammarState(schema({"type": "string", "maxLength": 4}))
    assert st.accept(ord('"') + 3)
    assert 0x02 + 3 not in allowed(st) and ord("\t") + 3 not in allowed(st) and ord("a") + 3 in allowed(st)


def test_a_compile_past_the_time_bound_is_refused() -> None:
    slow = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "pattern": "^[a-z]{2,9}@[a-z]{3,8}$"} for i in range(60)},
    }
    with pytest.raises(GrammarError, match="too complex"):
        compile_grammar(TOK, GrammarSpec("json_schema", json.dumps(slow)), timeout_s=1e-4)
