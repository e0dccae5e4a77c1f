"""End to end: every error a client can provoke gets OpenAI's error object and status, and the server stays healthy.

This module's server runs with auth on (the bootstrap admin key it prints is `server.api_key`) and a tiny waiting queue (max_waiting=1, max_num_seqs=1) so that backpressure (429 with
Retry-After) is reachable with a handful of concurrent requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server(serve_llmaas: Callable[..., Any], tiny_config: Callable[..., dict[str, Any]]) -> Iterator[Any]:
    config = tiny_config(
        chat={"max_waiting": 1, "max_num_seqs": 1},
        default_max_tokens=16,
        limits={"max_body_bytes": 32 * 1024, "max_n": 4},
    )
    s = serve_llmaas(config, auth=True)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> Any:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120)


def check(r: httpx.Response, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param and error["code"] == code, error
    return error  # type: ignore[no-any-return]


def auth(server: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.api_key}"}


def post(server: Any, path: str, **kw: Any) -> httpx.Response:
    headers = {**auth(server), **kw.pop("headers", {})}
    return httpx.post(f"{server.base_url}{path}", timeout=60, headers=headers, **kw)


def test_keys_are_required(server: Any) -> None:
    for headers in [{}, {"Authorization": "Bearer sk-not-a-real-key"}]:
        r = httpx.post(
            f"{server.base_url}/chat/completions", json={"model": "tiny", "messages": MSG}, headers=headers, timeout=30
        )
        check(r, 401, None, "invalid_api_key")
        r = httpx.get(f"{server.base_url}/models", headers=headers, timeout=30)
        check(r, 401, None, "invalid_api_key")
    assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
    assert httpx.get(f"{server.base_url}/models", headers=auth(server), timeout=30).status_code == 200


def test_rate_limit_headers_and_429(server: Any) -> None:
    """A project with rpm=2: answers carry x-ratelimit-* (streams too); the third request in a minute gets 429."""
    r = httpx.post(
        f"{server.url}/admin/projects",
        json={"id": "limited", "name": "limited", "rpm": 2},
        headers=auth(server),
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    r = httpx.post(
        f"{server.url}/admin/keys", json={"project_id": "limited", "name": "k"}, headers=auth(server), timeout=30
    )
    assert r.status_code in (200, 201), r.text
    key = {"Authorization": f"Bearer {r.json()['key']}"}
    body = {"model": "tiny", "messages": MSG, "max_tokens": 2}
    r = post(server, "/chat/completions", json=body, headers=key)
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "2", r.headers
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json={**body, "stream": True}, headers=key, timeout=60
    ) as s:
        assert s.status_code == 200 and "x-ratelimit-remaining-requests" in s.headers
        s.read()
    r = post(server, "/chat/completions", json=body, headers=key)
    check(r, 429, None, r.json()["error"]["code"])
    assert int(r.headers["retry-after"]) >= 1
    assert server.healthy()


def test_openai_exceptions(client: Any, server: Any) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=MSG)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=MSG, temperature=5)
    assert e.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=MSG, n=5)
    assert e.value.param == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x" * 600}])
    assert e.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x", dimensions=100)
    assert e.value.param == "dimensions"
    assert server.healthy()


@pytest.mark.parametrize(
    "path, body, status, param, code",
    [
        ("/chat/completions", {"model": "tiny"}, 400, "messages", None),
        (
            "/chat/completions",
            {"model": "tiny", "messages": MSG, "max_tokens": 500},
            400,
            "messages",
            "context_length_exceeded",
        ),
        ("/chat/completions", {"model": "tiny", "messages": MSG, "top_p": 2}, 400, "top_p", None),
        ("/chat/completions", {"model": "tiny", "messages": MSG, "logit_bias": {"x": 1}}, 400, "logit_bias", None),
        ("/chat/completions", {"model": "tiny", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
        (
            "/chat/completions",
            {"model": "tiny", "messages": MSG, "logprobs": True, "top_logprobs": 30},
            400,
            "top_logprobs",
            None,
        ),
        (
            "/chat/completions",
            {"model": "tiny", "messages": MSG, "tools": [{"type": "function"}]},
            400,
            "tools[0].function",
            None,
        ),
        (
            "/chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            400,
            "messages[0].content[0].type",
            None,
        ),
        ("/chat/completions", {"model": "all-MiniLM-L6-v2", "messages": MSG}, 400, "model", None),
        ("/completions", {"model": "tiny", "prompt": [99999]}, 400, "prompt", None),
        ("/completions", {"model": "tiny", "prompt": "x" * 600}, 400, "prompt", "context_length_exceeded"),
        ("/embeddings", {"model": "all-MiniLM-L6-v2", "input": []}, 400, "input", None),
        ("/embeddings", {"model": "all-MiniLM-L6-v2", "input": "word " * 600}, 400, "input", "context_length_exceeded"),
        ("/embeddings", {"model": "tiny", "input": "x"}, 400, "model", None),
        ("/embeddings", {"model": "nope", "input": "x"}, 404, "model", "model_not_found"),
    ],
)
def test_bad_requests(
    server: Any, path: str, body: dict[str, Any], status: int, param: str | None, code: str | None
) -> None:
    check(post(server, path, json=body), status, param, code)
    assert server.healthy()


def test_malformed_and_oversized_bodies(server: Any) -> None:
    r = post(server, "/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert "JSON" in check(r, 400)["message"]
    r = post(
        server, "/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x" * 40_000}]}
    )
    check(r, 413, None, "payload_too_large")

    def chunked() -> Iterator[bytes]:
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}]}'

    r = post(server, "/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    check(r, 413, None, "payload_too_large")
    assert server.healthy()


def test_backpressure_is_429_with_retry_after(server: Any) -> None:
    body = {"model": "tiny", "messages": MSG, "max_tokens": 200, "ignore_eos": True, "temperature": 0}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=120, headers=auth(server)) as c:
            return list(await asyncio.gather(*[c.post("/chat/completions", json=body) for _ in range(6)]))

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses, statuses
    for r in responses:
        if r.status_code == 429:
            check(r, 429, None, "server_overloaded")
            assert int(r.headers["retry-after"]) >= 1
    assert server.healthy()


def test_disconnect_mid_stream_leaves_server_healthy(server: Any) -> None:
    body = {"model": "tiny", "messages": MSG, "max_tokens": 400, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/chat/completions", json=body, timeout=60, headers=auth(server)) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 3:
                break
    # the disconnect aborts the sequence: the engine soon runs nothing (it would generate 400 tokens otherwise)
    running = None
    for _ in range(100):
        metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
        running = [line for line in metrics.splitlines() if line.startswith("llmaas_engine_running_sequences")]
        if running and all(line.endswith(" 0.0") or line.endswith(" 0") for line in running):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the aborted stream still runs: {running}")
    r = post(server, "/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 2})
    assert r.status_code == 200, r.text
