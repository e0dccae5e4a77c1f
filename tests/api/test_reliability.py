"""Issue 14's faults and their siblings, in-process: text that is not Unicode, JSON types, refused requests' billing,
every 429's Retry-After, id entropy and not-found floods. (tests/e2e/test_reliability_e2e.py repeats each fault
against `llmaas serve`.)"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from llmaas.api.errors import error_payload
from llmaas.api.protocol import admin, chat, classifications, completions, embeddings, fine_tuning
from llmaas.config import Settings
from llmaas.errors import QuotaExceeded, RateLimited
from llmaas.ids import new_id as response_id
from llmaas.ids import new_id as store_id
from llmaas.ids import sortable_id
from llmaas.unicode import lone_surrogate_path

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    """conftest's settings, with a small not-found allowance (only keyed callers, `authed_client`, are limited)."""
    limits = {"max_body_bytes": 4096, "max_not_found_per_minute": 3}
    return Settings(auth=False, data_dir=tmp_path, default_max_tokens=64, limits=limits)


def ok(client: Any) -> None:
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 2})
    assert r.status_code == 200, r.text


def err(
    r: Any, status: int, param: str | None = None, code: str | None = None, type_: str = "invalid_request_error"
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    e = r.json()["error"]
    assert set(e) == {"message", "type", "param", "code"} and e["message"], e
    assert e["type"] == type_ and e["param"] == param and e["code"] == code, e
    return e  # type: ignore[no-any-return]


JSON = {"Content-Type": "application/json"}


def raw(client: Any, path: str, body: str | bytes) -> Any:
    """POST a body exactly as given (json.dumps would escape what these tests need raw)."""
    return client.post(path, content=body.encode() if isinstance(body, str) else body, headers=JSON)


# --- 1. text that is not valid Unicode -----------------------------------------------------------------------

LONE = "\\ud800"  # as it appears in JSON text: the escape of a lone (high) surrogate


@pytest.mark.parametrize(
    "path, body, param",
    [
        (
            "/v1/chat/completions",
            f'{{"model":"tiny","messages":[{{"role":"user","content":"a{LONE}b"}}],"max_tokens":4}}',
            "messages[0].content",
        ),
        (
            "/v1/chat/completions",
            f'{{"model":"tiny","messages":[{{"role":"user","content":[{{"type":"text","text":"{LONE}"}}]}}]}}',
            "messages[0].content[0].text",
        ),
        (
            "/v1/chat/completions",
            f'{{"model":"tiny","messages":[{{"role":"user","content":"hi","name":"x{LONE}"}}]}}',
            "messages[0].name",
        ),
        (
            "/v1/chat/completions",
            '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stop":["ok","\\udfff"]}',
            "stop[1]",
        ),
        ("/v1/chat/completions", f'{{"model":"tiny{LONE}","messages":[{{"role":"user","content":"hi"}}]}}', "model"),
        ("/v1/completions", f'{{"model":"tiny","prompt":"{LONE}"}}', "prompt"),
        ("/v1/completions", '{"model":"tiny","prompt":["ok","x\\udc00"]}', "prompt[1]"),
        ("/v1/completions", f'{{"model":"tiny","prompt":"hi","stop":"{LONE}"}}', "stop"),
        ("/v1/embeddings", f'{{"model":"emb","input":"a{LONE}"}}', "input"),
        ("/v1/embeddings", f'{{"model":"emb","input":["a","b{LONE}"]}}', "input[1]"),
        ("/v1/classifications", f'{{"model":"tiny","input":"{LONE}","labels":["a","b"]}}', "input"),
        ("/v1/classifications", f'{{"model":"tiny","input":"ok","labels":["a","b{LONE}"]}}', "labels[1]"),
        ("/v1/fine_tuning/jobs", f'{{"model":"tiny","training_file":"file-1","suffix":"{LONE}"}}', "suffix"),
        ("/admin/projects", f'{{"name":"p{LONE}"}}', "name"),
        (
            "/v1/chat/completions",
            f'{{"model":"tiny","messages":[{{"role":"user","content":"hi"}}],"metadata":{{"k{LONE}":"v"}}}}',
            "metadata",
        ),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(client: Any, path: str, body: str, param: str) -> None:
    e = err(raw(client, path, body), 400, param)
    assert "surrogate" in e["message"]
    ok(client)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"tiny","messages":[{"role":"user","content":"a\xed\xa0\x80b"}]}',  # CESU-8 surrogate bytes
        b'{"model":"tiny","messages":[{"role":"user","content":"a\xffb"}]}',  # not UTF-8 at all
        b'{"model":"tiny","messages":[{"role":"user","content":"a\xc3"}]}',  # truncated sequence
    ],
)
def test_bodies_that_are_not_utf8_are_400(client: Any, body: bytes) -> None:
    e = err(raw(client, "/v1/chat/completions", body), 400)
    assert "UTF-8" in e["message"]


def test_valid_escapes_still_work(client: Any, registry: Any) -> None:
    # A surrogate *pair* is an ordinary astral character (json.dumps writes emoji this way by default), and an
    # escaped backslash followed by "ud800" is just text.
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "😀 \\ud800 é"}], "max_tokens": 2})
    assert "\\ud83d\\ude00" in body
    r = raw(client, "/v1/chat/completions", body)
    assert r.status_code == 200, r.text


def test_lone_surrogate_path_walks_everything() -> None:
    assert lone_surrogate_path({"a": [{"b": "ok"}, {"c": ["x", "\ud800"]}]}) == "a[1].c[1]"
    assert lone_surrogate_path({"a": "😀", "b": [1, 2.5, None, True]}) is None
    assert lone_surrogate_path("\udfff") == "body"


# --- 2. JSON types: no bool or string as a number, no fraction as an integer ----------------------------------

BAD_NUMBERS = [True, False, "5", 1.5, None]  # None is only tested where the field is required


def _numeric_fields(model: type[BaseModel]) -> list[tuple[str, type]]:
    out = []
    for name, f in model.model_fields.items():
        args = set(_leaves(f.annotation))
        if int in args or float in args:
            out.append((name, int if int in args else float))
    return out


def _leaves(annotation: Any) -> Iterator[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        yield from _leaves(typing.get_args(annotation)[0])
    elif origin in (typing.Union, types.UnionType):
        for a in typing.get_args(annotation):
            yield from _leaves(a)
    else:
        yield annotation


CHAT_NUMBERS = _numeric_fields(chat.ChatCompletionRequest)
COMPLETION_NUMBERS = _numeric_fields(completions.CompletionRequest)


def test_the_sweep_sees_every_number() -> None:
    names = {n for n, _ in CHAT_NUMBERS}
    assert {
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "n",
        "seed",
        "max_tokens",
        "max_completion_tokens",
        "top_logprobs",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
    } <= names
    assert {"max_tokens", "logprobs", "best_of", "n"} <= {n for n, _ in COMPLETION_NUMBERS}


@pytest.mark.parametrize("field, kind", CHAT_NUMBERS)
def test_chat_numbers_refuse_booleans_and_strings(client: Any, field: str, kind: type) -> None:
    bad: list[Any] = [True, False, "1"] + ([1.5, 1.0] if kind is int else [])
    for value in bad:
        body = {"model": "tiny", "messages": MSG, field: value}
        if field == "top_logprobs":
            body["logprobs"] = True
        err(client.post("/v1/chat/completions", json=body), 400, field)
    ok(client)


@pytest.mark.parametrize("field, kind", COMPLETION_NUMBERS)
def test_completion_numbers_refuse_booleans_and_strings(client: Any, field: str, kind: type) -> None:
    bad: list[Any] = [True, "1"] + ([1.5] if kind is int else [])
    for value in bad:
        err(client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", field: value}), 400, field)


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"model": "tiny", "messages": MSG, "stream": "true"}, "stream"),
        ("/v1/chat/completions", {"model": "tiny", "messages": MSG, "stream": 1}, "stream"),
        ("/v1/chat/completions", {"model": "tiny", "messages": MSG, "logprobs": 1}, "logprobs"),
        ("/v1/chat/completions", {"model": "tiny", "messages": MSG, "ignore_eos": "yes"}, "ignore_eos"),
        ("/v1/chat/completions", {"model": "tiny", "messages": MSG, "logit_bias": {"5": "1"}}, "logit_bias.5"),
        ("/v1/chat/completions", {"model": "tiny", "messages": MSG, "logit_bias": {"5": True}}, "logit_bias.5"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": MSG, "stream": True, "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
        ("/v1/chat/completions", {"model": 5, "messages": MSG}, "model"),
        ("/v1/completions", {"model": "tiny", "prompt": [1, True, 3]}, "prompt"),  # a union: the field, not the item
        ("/v1/completions", {"model": "tiny", "prompt": "hi", "echo": 1}, "echo"),
        ("/v1/embeddings", {"model": "emb", "input": "hi", "dimensions": True}, "dimensions"),
        ("/v1/embeddings", {"model": "emb", "input": [[1, 2.0]]}, "input"),
        ("/admin/projects", {"name": "p", "rpm": True}, "rpm"),
        ("/admin/projects", {"name": "p", "tpm": "100"}, "tpm"),
        ("/admin/keys", {"project_id": "default", "name": "k", "monthly_token_budget": 1.5}, "monthly_token_budget"),
        ("/admin/keys", {"project_id": "default", "name": "k", "is_admin": 1}, "is_admin"),
        ("/admin/keys", {"project_id": "default", "name": "k", "expires_at": "2000000000"}, "expires_at"),
    ],
)
def test_json_types_are_strict_everywhere(client: Any, path: str, body: dict[str, Any], param: str) -> None:
    err(client.post(path, json=body), 400, param)  # fine-tuning's numbers: tests/training/test_api.py (needs a store)


def test_integers_are_fine_where_floats_are_expected(client: Any) -> None:
    r = client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": MSG, "temperature": 0, "top_p": 1, "max_tokens": 2}
    )
    assert r.status_code == 200, r.text


REQUEST_MODELS = [
    chat.ChatCompletionRequest,
    completions.CompletionRequest,
    embeddings.EmbeddingRequest,
    classifications.ClassificationRequest,
    fine_tuning.FineTuningJobCreate,
    admin.ProjectCreate,
    admin.ProjectUpdate,
    admin.KeyCreate,
    admin.KeyUpdate,
]


def _models_in(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for f in model.model_fields.values():
        for leaf in _deep_leaves(f.annotation):
            if isinstance(leaf, type) and issubclass(leaf, BaseModel):
                _models_in(leaf, seen)


def _deep_leaves(annotation: Any) -> Iterator[Any]:
    args = typing.get_args(annotation)
    if not args:
        yield annotation
    for a in args:
        yield from _deep_leaves(a)


def test_every_request_model_is_strict() -> None:
    """Pydantic's `strict` does not reach into nested models: each one, however deep, must be strict itself."""
    seen: set[type[BaseModel]] = set()
    for m in REQUEST_MODELS:
        _models_in(m, seen)
    lax = sorted(m.__name__ for m in seen if not m.model_config.get("strict"))
    assert not lax, f"request models that coerce JSON types (derive from OpenAIBaseModel or StrictModel): {lax}"
    assert len(seen) > len(REQUEST_MODELS)  # the nested ones were found


# --- 3. a request the engine refused bills nothing --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_requests_bill_nothing(client: Any, meter: Any, stream: bool) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "OVERLOAD " * 20}], "stream": stream, "n": 2}
    err(client.post("/v1/chat/completions", json=body), 429, None, "server_overloaded", "server_overloaded")
    assert meter.settled[-1] == {"prompt": 0, "completion": 0, "status": 429, "model": "tiny"}
    err(
        client.post("/v1/completions", json={"model": "tiny", "prompt": ["OVERLOAD", "OVERLOAD too"]}),
        429,
        None,
        "server_overloaded",
        "server_overloaded",
    )
    assert meter.settled[-1]["prompt"] == 0 and meter.settled[-1]["completion"] == 0


def test_a_call_refused_halfway_leaves_nothing_running(client: Any, meter: Any, registry: Any) -> None:
    """The engine refuses the second prompt of a call: the first, submitted already, is aborted; nothing is billed."""
    engine = registry.engines["tiny"]
    body = {"model": "tiny", "prompt": ["SLOW and fine", "OVERLOAD"], "max_tokens": 5}
    err(client.post("/v1/completions", json=body), 429, None, "server_overloaded", "server_overloaded")
    assert len(engine.submitted) == 1 and engine.submitted[0].request_id in engine.aborted
    assert meter.settled[-1] == {"prompt": 0, "completion": 0, "status": 429, "model": "tiny"}


def test_engine_failures_and_served_requests_still_bill_their_prompt(client: Any, meter: Any) -> None:
    client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "FAIL"}]})
    assert meter.settled[-1]["status"] == 500 and meter.settled[-1]["prompt"] > 0  # it ran: its prompt was computed
    ok(client)
    assert meter.settled[-1]["status"] == 200 and meter.settled[-1]["prompt"] > 0


# --- 5. every 429 carries Retry-After -------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RateLimited("x"), QuotaExceeded("x"), RateLimited("x", retry_after=0.2)])
def test_every_429_has_retry_after(exc: Exception) -> None:
    status, _, headers = error_payload(exc)
    assert status == 429 and int(headers["Retry-After"]) >= 1


# --- 6. ids carry 128 random bits -------------------------------------------------------------------------------


def test_ids_carry_128_random_bits(client: Any) -> None:
    r = client.post("/v1/chat/completions", json={"model": "tiny", "messages": MSG, "max_tokens": 1})
    for value in [r.json()["id"], response_id("cmpl"), store_id("key"), store_id("ftckpt")]:
        assert re.fullmatch(r"[a-z]+-[0-9a-f]{32}", value), value
    job = sortable_id("ftjob")
    assert re.fullmatch(r"ftjob-[0-9a-f]{16}[0-9a-f]{32}", job) and len(job) <= 64  # timestamp, then the random part
    assert len({store_id("file") for _ in range(1000)}) == 1000


# --- 8. not-found floods ----------------------------------------------------------------------------------------


def test_not_found_answers_are_limited_per_key(authed_client: TestClient) -> None:
    guarded = authed_client
    a, admin_key = {"Authorization": "Bearer sk-a"}, {"Authorization": "Bearer sk-admin"}
    for i in range(3):
        err(guarded.get(f"/v1/models/guess-{i}", headers=a), 404, "model", "model_not_found")
    # Now even a model that exists is refused: a scanner cannot tell a hit from a miss until the minute is over.
    for path in ["/v1/models/tiny", "/v1/models/guess-9"]:
        r = guarded.get(path, headers=a)
        err(r, 429, None, "rate_limit_exceeded", "rate_limit_exceeded")
        assert 1 <= int(r.headers["retry-after"]) <= 60
    r = guarded.post("/v1/chat/completions", json={"model": "nope", "messages": MSG}, headers=a)
    assert r.status_code == 429
    # Other keys are not affected.
    assert guarded.get("/v1/models/tiny", headers=admin_key).status_code == 200
    err(guarded.get("/v1/models/guess-x", headers=admin_key), 404, "model", "model_not_found")


# --- sweep: every route's answer to a malformed body ------------------------------------------------------------

MALFORMED = [b"not json", b"[1, 2]", b'"a string"', b"null", b'{"model": ', b"{\xff}", b'{"a": "\\ud800"}', b"{}"]


def _body_routes(app: Any) -> list[tuple[str, str, bool]]:
    """(method, path with ids filled in, whether it reads a JSON body) of every POST/PATCH/PUT route."""
    from llmaas.api.deps import iter_routes

    out = []
    for path, dependant, route in iter_routes(app):
        for method in sorted(getattr(route, "methods", None) or ()):
            if method in ("POST", "PATCH", "PUT"):
                takes_body = bool(dependant is not None and dependant.body_params) or path == "/v1/files"
                out.append((method, re.sub(r"\{[^}]+\}", "x", path), takes_body))
    return sorted(set(out))


def test_every_route_answers_malformed_bodies_with_an_openai_400(client: Any) -> None:
    routes = _body_routes(client.app)
    assert ("POST", "/v1/chat/completions", True) in routes and ("PATCH", "/admin/keys/x", True) in routes
    for method, path, takes_body in routes:
        for body in MALFORMED:
            r = client.request(method, path, content=body, headers=JSON)
            # 404/409/503: the route looked for its object (or its database) after the body passed; never 422 or 500
            assert r.status_code in (400, 404, 409, 503), (method, path, body, r.status_code, r.text)
            assert set(r.json()) == {"error"} and set(r.json()["error"]) == {"message", "type", "param", "code"}
            if body != b"{}" and takes_body:  # 503: files and fine-tuning look for their database first (none here)
                assert r.status_code in (400, 503), (method, path, body, r.text)


def test_error_messages_quoting_non_unicode_text_still_render() -> None:
    from llmaas.api.errors import error_response
    from llmaas.errors import InvalidRequest

    response = error_response(InvalidRequest("'\ud800' is not a valid purpose", param="x\udc00"))
    body = json.loads(response.body)
    assert (
        response.status_code == 400
        and body["error"]["message"] == "'?' is not a valid purpose"
        and body["error"]["param"] == "x?"
    )
