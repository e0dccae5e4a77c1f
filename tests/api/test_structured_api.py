"""Structured outputs and tools above the engine: the constraint a request builds, the tool prompt, the tool-call
parser (fed whole and one character at a time), and the 400s for schemas past the configured bounds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmaas.api.app import create_app
from llmaas.api.serving.structured import (
    ArgumentsDelta,
    ToolCallParser,
    ToolCallStart,
    ToolSpec,
    build_constraint,
    with_tool_prompt,
)
from llmaas.config import Settings
from tests.support.fakes import FakeFinetuned, FakeRegistry, FakeTokenizer

WEATHER = ToolSpec(
    "get_weather", "Weather now", {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
)
CLOCK = ToolSpec("get_time", None, {"type": "object", "properties": {}})


def parse(text: str, step: int | None = None) -> tuple[str, list[dict[str, Any]], list[Any]]:
    p = ToolCallParser({"get_weather", "get_time"})
    pieces: list[Any] = []
    chunks = [text] if step is None else [text[i : i + step] for i in range(0, len(text), step)]
    for c in chunks:
        pieces += p.feed(c)
    pieces += p.finish()
    return "".join(x for x in pieces if isinstance(x, str)), p.calls, pieces


def test_constraint_shapes() -> None:
    assert build_constraint().spec is None
    assert build_constraint(json_object=True).spec.kind == "json_schema"  # type: ignore[union-attr]
    c = build_constraint(json_schema={"type": "object"}, tools=[WEATHER], tool_choice="none")
    assert c.spec is not None and c.spec.kind == "json_schema" and not c.parses_tools
    req = build_constraint(tools=[WEATHER, CLOCK], tool_choice="required", parallel_tool_calls=False)
    fmt = json.loads(req.spec.source)["format"]  # type: ignore[union-attr]
    assert (
        fmt["type"] == "tags_with_separator"
        and fmt["at_least_one"]
        and fmt["stop_after_first"]
        and len(fmt["tags"]) == 2
    )
    named = build_constraint(tools=[WEATHER, CLOCK], tool_choice="get_time")
    assert [t.name for t in named.tools] == ["get_time"] and named.tool_mode == "required"
    auto = json.loads(build_constraint(tools=[WEATHER]).spec.source)["format"]  # type: ignore[union-attr]
    assert auto["type"] == "triggered_tags" and auto["triggers"] == ["<tool_call>"]


def test_every_constraint_compiles_for_a_vocabulary() -> None:
    tok = FakeTokenizer()
    for c in [
        build_constraint(json_object=True),
        build_constraint(tools=[WEATHER, CLOCK]),
        build_constraint(tools=[WEATHER], tool_choice="required"),
        build_constraint(json_schema={"type": "object"}, tools=[WEATHER], tool_choice="auto"),
    ]:
        assert tok.compile_grammar(c.spec) is not None


def test_tool_prompt_joins_the_system_message() -> None:
    c = build_constraint(tools=[WEATHER], tool_choice="required")
    msgs = with_tool_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}], c)
    assert len(msgs) == 2 and msgs[0]["content"].startswith("Be brief.") and '"get_weather"' in msgs[0]["content"]
    assert with_tool_prompt([{"role": "user", "content": "hi"}], c)[0]["role"] == "system"


CALLS = (
    'Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris}"}}</tool_call>\n'
    '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
)


@pytest.mark.parametrize("step", [None, 1, 3, 7])
def test_parser_splits_text_and_calls_however_the_text_arrives(step: int | None) -> None:
    content, calls, pieces = parse(CALLS, step)
    assert content == "Let me check.\n"
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris}"}),
        ("get_time", {}),
    ]
    starts = [p for p in pieces if isinstance(p, ToolCallStart)]
    assert [s.index for s in starts] == [0, 1] and all(s.id.startswith("call_") for s in starts)
    assert "".join(p.text for p in pieces if isinstance(p, ArgumentsDelta) and p.index == 0) == calls[0]["arguments"]


def test_parser_leaves_plain_text_and_near_misses_alone() -> None:
    for text in ["no calls here <tool", "a <tool_call> that is not json", "<tool_c", "x < y"]:
        content, calls, _ = parse(text, 1)
        assert content == text and calls == []


def test_parser_keeps_an_unfinished_call() -> None:
    content, calls, _ = parse('<tool_call>{"name": "get_weather", "arguments": {"city": "Pa', 2)
    assert content == "" and calls[0]["arguments"] == '{"city": "Pa'


@pytest.fixture
def small_limits_client(tmp_path: Any) -> Iterator[TestClient]:
    settings = Settings(
        auth=False, data_dir=tmp_path, default_max_tokens=64, limits={"max_schema_bytes": 256, "max_tools": 2}
    )
    with TestClient(
        create_app(settings, FakeRegistry(), finetuned=FakeFinetuned()), raise_server_exceptions=False
    ) as c:
        yield c


def test_schema_and_tool_bounds_are_400_with_param(small_limits_client: TestClient) -> None:
    big = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(20)}}
    msg = [{"role": "user", "content": "hi"}]
    cases = [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": big}}},
            "response_format.json_schema.schema",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": big}}]},
            "tools[0].function.parameters",
        ),
        ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(3)]}, "tools"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "wat"}}}},
                }
            },
            "response_format.json_schema.schema",
        ),
    ]
    for extra, param in cases:
        r = small_limits_client.post("/v1/chat/completions", json={"model": "tiny", "messages": msg, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    ok = small_limits_client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": msg, "response_format": {"type": "json_object"}}
    )
    assert ok.status_code == 200, ok.text


def test_tool_history_is_accepted(small_limits_client: TestClient) -> None:
    msgs = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    r = small_limits_client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": msgs, "tools": tools, "tool_choice": "none"}
    )
    assert r.status_code == 200, r.text
    assert (
        r.json()["choices"][0]["message"]["refusal"] is None and "tool_calls" not in r.json()["choices"][0]["message"]
    )
