"""Structured outputs and tool calling against `llmaas serve`, through the official openai client.

Most tests use a tiny random model (a 4k context: the byte tokenizer spends a token per character of the tool prompt):
its output is noise, so whatever validates does so because the engine's masks left it no other choice. Two tests use
the real default model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.support.server import LlmaasProcess

MSG = [{"role": "user", "content": "Tell me."}]
UNIT = {
    "type": "object",
    "properties": {"unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["unit", "days"],
    "additionalProperties": False,
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": UNIT}},
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
        },
    },
]
SCHEMAS: list[dict[str, Any]] = [
    UNIT,
    {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 3},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "extra": {"type": "null"},
        },
        "required": ["ok", "tags", "code"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "inner": {
                "type": "object",
                "properties": {"x": {"type": "number", "minimum": -1, "maximum": 1}},
                "required": ["x"],
                "additionalProperties": False,
            },
            "name": {"type": "string", "maxLength": 6},
        },
        "required": ["inner", "name"],
        "additionalProperties": False,
    },
]


class Forecast(BaseModel):
    unit: Literal["c", "f"]
    days: int = Field(ge=1, le=7)
    city: str = Field(max_length=8)


@pytest.fixture(scope="module")
def server(
    serve_llmaas: Callable[..., LlmaasProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlmaasProcess]:
    from tests.support.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path_factory.mktemp("tiny-4k"), max_position_embeddings=4096)
    spec = {"name": "tiny", "source": str(folder), "kind": "chat", "kv_cache_mb": 32, "max_num_seqs": 16}
    s = serve_llmaas({"models": [spec], "default_max_tokens": 160})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: LlmaasProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=120)


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    r = client.chat.completions.parse(model="tiny", messages=MSG, response_format=Forecast, temperature=0)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "stop" and msg.refusal is None
    assert isinstance(msg.parsed, Forecast) and Forecast.model_validate_json(msg.content or "") == msg.parsed


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_outputs_validate(client: openai.OpenAI, temperature: float) -> None:
    for i, schema in enumerate(SCHEMAS):
        r = client.chat.completions.create(
            model="tiny",
            messages=MSG,
            temperature=temperature,
            seed=i,
            n=2,
            max_tokens=160,
            response_format={"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}},
        )
        for c in r.choices:
            assert c.finish_reason == "stop", c.message.content
            jsonschema.validate(json.loads(c.message.content or ""), schema)


def test_streamed_json_is_the_same_json(client: openai.OpenAI) -> None:
    rf: Any = {"type": "json_schema", "json_schema": {"name": "unit", "schema": UNIT}}
    whole = client.chat.completions.create(model="tiny", messages=MSG, temperature=0, response_format=rf)
    chunks = list(
        client.chat.completions.create(model="tiny", messages=MSG, temperature=0, response_format=rf, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_json_object_starts_an_object(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=MSG, temperature=0, max_tokens=8, response_format={"type": "json_object"}
    )
    assert (r.choices[0].message.content or "").startswith(
        "{"
    )  # noise keys never end: the default model test completes one


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_calls_required_and_named(client: openai.OpenAI, choice: Any) -> None:
    r = client.chat.completions.create(
        model="tiny", messages=MSG, tools=TOOLS, tool_choice=choice, temperature=1, seed=3, parallel_tool_calls=False
    )
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None and c.message.refusal is None
    calls = c.message.tool_calls or []
    assert len(calls) == 1 and calls[0].id.startswith("call_") and calls[0].type == "function"
    if isinstance(choice, dict):
        assert calls[0].function.name == "get_weather"
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == calls[0].function.name)
    jsonschema.validate(json.loads(calls[0].function.arguments), schema)


def test_streamed_tool_calls_are_deltas_like_openai(client: openai.OpenAI) -> None:
    kw: Any = {
        "model": "tiny",
        "messages": MSG,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
        "parallel_tool_calls": False,
    }
    whole = client.chat.completions.create(**kw)
    chunks = [c for c in client.chat.completions.create(**kw, stream=True) if c.choices]
    deltas = [c.choices[0].delta for c in chunks if c.choices[0].delta.tool_calls]
    first = deltas[0].tool_calls[0]  # type: ignore[index]
    assert first.index == 0 and first.id and first.id.startswith("call_") and first.type == "function"
    assert first.function is not None and first.function.name == "get_weather" and first.function.arguments == ""
    rest = [d.tool_calls[0] for d in deltas[1:]]  # type: ignore[index]
    assert all(t.id is None and t.function is not None and t.function.name is None for t in rest), rest[:3]
    args = "".join(t.function.arguments or "" for t in rest)  # type: ignore[union-attr]
    assert args == (whole.choices[0].message.tool_calls or [])[0].function.arguments
    jsonschema.validate(json.loads(args), UNIT)
    assert chunks[-1].choices[0].finish_reason == "tool_calls" and chunks[-1].choices[0].delta.tool_calls is None


def test_tool_result_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model="tiny", messages=MSG, tools=TOOLS, tool_choice="required", temperature=0
    )
    call = (first.choices[0].message.tool_calls or [])[0]
    history: Any = [
        *MSG,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp": 21})},
    ]
    follow = client.chat.completions.create(
        model="tiny", messages=history, tools=TOOLS, tool_choice="none", max_tokens=8
    )
    assert follow.choices[0].message.tool_calls is None and follow.choices[0].finish_reason in ("stop", "length")


def test_auto_answers_text_or_valid_calls(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=MSG, tools=TOOLS, max_tokens=24, seed=5, temperature=1)
    c = r.choices[0]
    for call in c.message.tool_calls or []:
        json.loads(call.function.arguments)
    assert c.finish_reason in ("stop", "length", "tool_calls")


def test_bad_schemas_and_tools_are_400_and_the_server_stays_healthy(
    client: openai.OpenAI, server: LlmaasProcess
) -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "wat"}}}},
                }
            },
            "response_format.json_schema.schema",
        ),
        ({"tools": [{"type": "function", "function": {"parameters": UNIT}}]}, "tools[0].function.name"),
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ]
    for extra, param in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="tiny", messages=MSG, **extra)
        assert e.value.body["param"] == param  # type: ignore[index]
    assert server.api("GET", "/health").status_code == 200
    ok = client.chat.completions.create(model="tiny", messages=MSG, max_tokens=4)
    assert ok.choices[0].message.content is not None


# --- the real default model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smol(serve_llmaas: Callable[..., LlmaasProcess]) -> Iterator[openai.OpenAI]:
    s = serve_llmaas()
    yield openai.OpenAI(base_url=s.base_url, api_key="none", max_retries=0, timeout=300)
    s.stop()


class City(BaseModel):
    city: str = Field(max_length=40)
    country: str = Field(max_length=40)


@pytest.mark.slow
def test_default_model_parse_and_json_object(smol: openai.OpenAI) -> None:
    q = [{"role": "user", "content": "What is the capital of France? Answer in JSON."}]
    r = smol.chat.completions.parse(
        model="SmolLM2-135M-Instruct", messages=q, response_format=City, temperature=0, max_tokens=64
    )
    assert isinstance(r.choices[0].message.parsed, City)
    j = smol.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=q, response_format={"type": "json_object"}, temperature=0, max_tokens=64
    )
    assert isinstance(json.loads(j.choices[0].message.content or ""), dict)


@pytest.mark.slow
def test_default_model_calls_the_named_tool(smol: openai.OpenAI) -> None:
    q = [{"role": "user", "content": "What is the weather in Paris for the next 3 days, in celsius?"}]
    r = smol.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=q,
        tools=TOOLS,
        tool_choice="required",
        temperature=0,
        max_tokens=200,
        parallel_tool_calls=False,
    )
    call = (r.choices[0].message.tool_calls or [])[0]
    assert r.choices[0].finish_reason == "tool_calls", r.choices[0].message
    schema = next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == call.function.name)
    jsonschema.validate(json.loads(call.function.arguments), schema)


# --- the Responses API: the same constraints, in its own shapes ---------------------------------------------------

RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": t["function"]["name"], "parameters": t["function"]["parameters"]} for t in TOOLS
]


def test_responses_text_format_json_schema_validates(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="tiny",
        input="Tell me.",
        temperature=1.0,
        max_output_tokens=160,
        text={"format": {"type": "json_schema", "name": "unit", "schema": UNIT, "strict": True}},
    )
    assert r.status == "completed", r.output
    jsonschema.validate(json.loads(r.output_text), UNIT)
    parsed = client.responses.parse(
        model="tiny", input="Tell me.", text_format=Forecast, temperature=0, max_output_tokens=160
    )
    assert isinstance(parsed.output_parsed, Forecast)


def test_responses_function_calls_and_the_round_trip(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="tiny",
        input="Weather?",
        tools=RESPONSES_TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=300,
    )
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and calls, r.output
    for call in calls:
        assert call.name in {"get_weather", "get_time"} and call.call_id
        schema = UNIT if call.name == "get_weather" else TOOLS[1]["function"]["parameters"]
        jsonschema.validate(json.loads(call.arguments), schema)
    follow = client.responses.create(
        model="tiny",
        previous_response_id=r.id,
        tools=RESPONSES_TOOLS,
        max_output_tokens=8,
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls],
    )
    assert follow.status in ("completed", "incomplete") and follow.previous_response_id == r.id
    items = client.responses.input_items.list(follow.id)
    assert [i.type for i in items.data] == ["function_call_output"] * len(calls)


def test_responses_streams_function_call_arguments(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model="tiny",
            input="Weather?",
            tools=RESPONSES_TOOLS,
            stream=True,
            tool_choice={"type": "function", "name": "get_weather"},
            parallel_tool_calls=False,
            temperature=0,
            max_output_tokens=300,
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments
    jsonschema.validate(json.loads(done.arguments), UNIT)
    assert [e.sequence_number for e in events] == list(range(len(events)))
