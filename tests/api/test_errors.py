"""Every bad request gets OpenAI's error object with the right status, type, param and code; the server stays healthy."""

from __future__ import annotations

from typing import Any

import pytest


def ok(client: Any) -> None:
    r = client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    )
    assert r.status_code == 200, r.text


def err(
    r: Any, status: int, param: str | None = None, code: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    e = body["error"]
    assert e["type"] == type_ and e["param"] == param and e["code"] == code, e
    assert e["message"]
    return e  # type: ignore[no-any-return]


MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": MSG}, "model"),
        ({"model": "tiny"}, "messages"),
        ({"model": "tiny", "messages": []}, "messages"),
        ({"model": "tiny", "messages": MSG, "temperature": 3}, "temperature"),
        ({"model": "tiny", "messages": MSG, "top_p": -1}, "top_p"),
        ({"model": "tiny", "messages": MSG, "n": 0}, "n"),
        ({"model": "tiny", "messages": MSG, "n": 9}, "n"),  # limits.max_n = 8
        ({"model": "tiny", "messages": MSG, "n": 10_000}, "n"),
        ({"model": "tiny", "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": "tiny", "messages": MSG, "presence_penalty": 5}, "presence_penalty"),
        ({"model": "tiny", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": "tiny", "messages": MSG, "stop": "x" * 300}, "stop"),
        ({"model": "tiny", "messages": MSG, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({"model": "tiny", "messages": MSG, "logit_bias": {"5": 101}}, "logit_bias"),
        ({"model": "tiny", "messages": MSG, "logit_bias": {"99999": 1}}, "logit_bias"),
        ({"model": "tiny", "messages": MSG, "top_logprobs": 2}, "top_logprobs"),
        ({"model": "tiny", "messages": MSG, "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"model": "tiny", "messages": MSG, "stream_options": {"include_usage": True}}, "stream_options"),
        (
            {"model": "tiny", "messages": MSG, "tools": [{"type": "function", "function": {"description": "no name"}}]},
            "tools[0].function.name",
        ),
        (
            {"model": "tiny", "messages": MSG, "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            "tools[0].function.name",
        ),
        (
            {"model": "tiny", "messages": MSG, "tools": [{"type": "retrieval", "function": {"name": "f"}}]},
            "tools[0].type",
        ),
        (
            {
                "model": "tiny",
                "messages": MSG,
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}},
            },
            "tool_choice",
        ),
        (
            {
                "model": "tiny",
                "messages": MSG,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
            },
            "tools[0].function.parameters",
        ),
        ({"model": "tiny", "messages": MSG, "functions": [{"name": "f"}]}, "functions"),
        ({"model": "tiny", "messages": MSG, "tool_choice": "auto"}, "tool_choice"),
        ({"model": "tiny", "messages": MSG, "response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        ({"model": "tiny", "messages": MSG, "response_format": {"type": "grammar"}}, "response_format.type"),
        (
            {
                "model": "tiny",
                "messages": MSG,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 5, "maximum": 1}},
                },
            },
            "response_format.json_schema.schema",
        ),
        ({"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}],
            },
            "messages[0].content[0].type",
        ),
        ({"model": "tiny", "messages": [{"role": "function", "content": "x", "name": "f"}]}, "messages[0].role"),
        ({"model": "tiny", "messages": MSG, "seed": 2**64}, "seed"),
    ],
)
def test_bad_parameters_are_400_with_param(client: Any, body: dict[str, Any], param: str) -> None:
    err(client.post("/v1/chat/completions", json=body), 400, param)
    ok(client)


def test_unknown_model_is_404(client: Any) -> None:
    e = err(
        client.post("/v1/chat/completions", json={"model": "nope", "messages": MSG}), 404, "model", "model_not_found"
    )
    assert "nope" in e["message"]


def test_embedding_model_on_chat_is_400(client: Any) -> None:
    err(client.post("/v1/chat/completions", json={"model": "emb", "messages": MSG}), 400, "model")
    err(client.post("/v1/embeddings", json={"model": "tiny", "input": "x"}), 400, "model")


def test_no_chat_template_is_400(client: Any) -> None:
    e = err(client.post("/v1/chat/completions", json={"model": "notemplate", "messages": MSG}), 400, "model")
    assert "chat template" in e["message"]
    r = client.post("/v1/completions", json={"model": "notemplate", "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200


def test_context_length(client: Any) -> None:
    long = [{"role": "user", "content": "x" * 300}]  # > max_model_len 256 tokens
    e = err(
        client.post("/v1/chat/completions", json={"model": "tiny", "messages": long}),
        400,
        "messages",
        "context_length_exceeded",
    )
    assert "256" in e["message"]
    mid = [{"role": "user", "content": "x" * 150}]
    err(
        client.post("/v1/chat/completions", json={"model": "tiny", "messages": mid, "max_tokens": 200}),
        400,
        "messages",
        "context_length_exceeded",
    )
    r = client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": mid, "seed": 1}
    )  # default max_tokens fits the room
    assert r.status_code == 200
    err(
        client.post("/v1/completions", json={"model": "tiny", "prompt": "y" * 300}),
        400,
        "prompt",
        "context_length_exceeded",
    )


def test_malformed_json_and_wrong_body(client: Any) -> None:
    e = err(
        client.post("/v1/chat/completions", content=b'{"model": "tiny",', headers={"content-type": "application/json"}),
        400,
    )
    assert "JSON" in e["message"]
    err(client.post("/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)
    err(client.post("/v1/chat/completions", content=b"", headers={"content-type": "application/json"}), 400)
    ok(client)


def test_body_too_large_content_length_and_chunked(client: Any) -> None:
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 5000}]}  # limit is 4096 bytes here
    err(client.post("/v1/chat/completions", json=big), 413, None, "payload_too_large")

    def chunks() -> Any:
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    r = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    err(r, 413, None, "payload_too_large")
    ok(client)


def test_overloaded_and_rate_limited_are_429_with_retry_after(client: Any, meter: Any) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "OVERLOAD"}], "stream": True},
    )
    err(r, 429, None, "server_overloaded", "server_overloaded")
    assert r.headers["retry-after"] == "2"
    assert meter.settled[-1]["status"] == 429  # the reservation was released
    meter.refuse = True
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    err(r, 429, None, "rate_limit_exceeded", "rate_limit_exceeded")
    assert r.headers["retry-after"] == "4" and r.headers["x-ratelimit-remaining-requests"] == "0"
    meter.refuse = False
    ok(client)


def test_engine_failure_is_500_without_internals(client: Any) -> None:
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "FAIL"}]})
    e = err(r, 500, None, "engine_error", "server_error")
    assert e["message"] == "boom (client-safe)"
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "FAIL"}], "stream": True},
    )
    err(r, 500, None, "engine_error", "server_error")  # failed before the first token: still a plain error
    r = client.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "LATEFAIL"}], "stream": True},
    )
    assert r.status_code == 200
    assert '"error"' in r.text and r.text.rstrip().endswith("data: [DONE]")
    ok(client)


def test_bug_is_generic_500(client: Any, registry: Any) -> None:
    def broken(name: str) -> Any:
        raise RuntimeError("/secret/path exploded")

    registry.chat = broken
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG})
    e = err(r, 500, None, None, "server_error")
    assert "secret" not in r.text and "exploded" not in e["message"]


def test_unknown_route_and_method(client: Any) -> None:
    err(client.get("/v1/nothing-here"), 404, None, "not_found")
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
