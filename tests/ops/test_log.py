"""Structured logs: JSON or plain, the request id on every line, an access line per request, no content or keys."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from fastapi.testclient import TestClient
from ops_helpers import build_app, ops_settings

from llmaas import log


def run_and_capture(settings: Any, **request: Any) -> list[str]:
    stream = io.StringIO()
    log.configure_logging(settings, stream=stream)
    try:
        with TestClient(build_app(settings)) as c:
            c.post(
                "/v1/things/abc123",
                json={"model": "chat-a", "prompt": "MY SECRET PROMPT"},
                headers={"X-Request-ID": "rid-42", "Authorization": "Bearer sk-live-SECRETKEY"},
            )
    finally:
        log.configure_logging(ops_settings())  # back to plain on stderr
    return [line for line in stream.getvalue().splitlines() if line]


def test_json_access_line() -> None:
    lines = run_and_capture(ops_settings(log_json=True))
    records = [json.loads(line) for line in lines]
    access = [r for r in records if r.get("event") == "access"]
    assert len(access) == 1
    a = access[0]
    assert a["request_id"] == "rid-42"
    assert a["method"] == "POST" and a["route"] == "/v1/things/{thing_id}" and a["status"] == 200
    assert a["latency_s"] >= 0 and a["key_prefix"] == "sk-abc" and a["model"] == "chat-a"
    ours = "\n".join(line for line, r in zip(lines, records) if r["logger"].startswith(("llmaas", "uvicorn")))
    assert "abc123" not in ours and "SECRET" not in ours  # the raw path (ids) and the body never appear


def test_plain_lines_carry_request_id() -> None:
    lines = run_and_capture(ops_settings(log_json=False))
    access = [line for line in lines if "llmaas.access" in line]
    assert access and "[rid-42]" in access[0] and "POST /v1/things/{thing_id} 200" in access[0]
    assert "key_prefix=sk-abc" in access[0] and "model=chat-a" in access[0]
    assert not any("SECRET" in line for line in lines)


def test_every_line_in_a_request_has_its_id() -> None:
    stream = io.StringIO()
    log.configure_logging(ops_settings(log_json=True), stream=stream)
    try:
        token = log.bind(log.RequestContext("req_inner"))
        logging.getLogger("llmaas.somewhere").warning("hello")
        log.unbind(token)
        logging.getLogger("llmaas.somewhere").warning("outside")
    finally:
        log.configure_logging(ops_settings())
    first, second = (json.loads(x) for x in stream.getvalue().splitlines())
    assert first["request_id"] == "req_inner" and second["request_id"] == "-"


def test_content_gate() -> None:
    log.configure_logging(ops_settings())
    assert log.content("my prompt") == "<9 chars>"
    log.configure_logging(ops_settings(environment="dev", log_content=True))
    try:
        assert log.content("my prompt") == "my prompt"
    finally:
        log.configure_logging(ops_settings())


def test_client_strings_cannot_forge_log_lines() -> None:
    token = log.bind(log.RequestContext("r"))
    try:
        log.note(model="x\nFAKE LINE", key_prefix="sk-1234567890abcdefghij")
        ctx = log.current()
        assert ctx is not None and "\n" not in (ctx.model or "") and len(ctx.key_prefix or "") <= 16
    finally:
        log.unbind(token)


def test_request_id_sanitizing() -> None:
    assert log.sanitize_request_id("abc-123") == "abc-123"
    assert log.sanitize_request_id("a" * 200) is None
    assert log.sanitize_request_id("a b") is None
    assert log.sanitize_request_id(None) is None
