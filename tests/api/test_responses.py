"""/v1/responses in-process (fake engine, a real migrated SQLite store): shapes, events, state, tenancy, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmaas.api.app import create_app
from llmaas.config import Settings
from llmaas.errors import Unauthenticated
from llmaas.tenancy.types import Principal
from tests.support.fakes import GREEDY_REPLY, FakeFinetuned, FakeRegistry, FakeTokenizer
from tests.support.stores import sqlite_store

ADMIN = {"Authorization": "Bearer sk-admin"}  # project `default`
OTHER = {"Authorization": "Bearer sk-a"}  # project `proj-a`


class TwoProjects:
    async def authenticate(self, authorization: str | None) -> Principal:
        if authorization == ADMIN["Authorization"]:
            return Principal("default", "k0", is_admin=True)
        if authorization == OTHER["Authorization"]:
            return Principal("proj-a", "k1")
        raise Unauthenticated("Incorrect API key provided.")


@pytest.fixture
def rclient(settings: Settings, registry: FakeRegistry, meter: Any, tmp_path: Path) -> Iterator[TestClient]:
    with sqlite_store(tmp_path) as store:
        app = create_app(settings, registry, meter=meter, auth=TwoProjects(), store=store, finetuned=FakeFinetuned())
        with TestClient(app, raise_server_exceptions=False) as c:
            yield c


def create(client: TestClient, headers: dict[str, str] = ADMIN, **body: Any) -> Any:
    body.setdefault("model", "tiny")
    body.setdefault("input", "Hi")
    body.setdefault("temperature", 0)
    return client.post("/v1/responses", json=body, headers=headers)


def events(response: Any) -> list[dict[str, Any]]:
    out = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = block.split("\n", 1)
        assert name.startswith("event: ") and data.startswith("data: "), block
        event = json.loads(data[len("data: ") :])
        assert event["type"] == name[len("event: ") :]
        out.append(event)
    return out


def prompt_text(registry: FakeRegistry, i: int = -1) -> str:
    return FakeTokenizer().decode(registry.engines["tiny"].submitted[i].prompt_token_ids, skip_special_tokens=False)


def test_create_shape_usage_and_metering(rclient: TestClient, registry: FakeRegistry, meter: Any) -> None:
    r = create(rclient, instructions="Be brief.", metadata={"k": "v"}, user="u1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["status"] == "completed"
    assert body["incomplete_details"] is None and body["error"] is None
    assert body["instructions"] == "Be brief." and body["metadata"] == {"k": "v"} and body["user"] == "u1"
    [item] = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["id"].startswith("msg_")
    assert item["content"] == [{"type": "output_text", "text": GREEDY_REPLY, "annotations": [], "logprobs": []}]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0}
    assert prompt_text(registry).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>")
    assert meter.admitted[-1]["tokens"] == usage["input_tokens"] + 64
    assert meter.settled[-1] == dict(
        prompt=usage["input_tokens"], completion=usage["output_tokens"], status=200, model="tiny"
    )
    assert r.headers["x-ratelimit-remaining-requests"] == "99"
    assert rclient.get(f"/v1/responses/{body['id']}", headers=ADMIN).json() == body


def test_item_list_input_and_max_output_tokens(rclient: TestClient, registry: FakeRegistry) -> None:
    r = create(rclient, max_output_tokens=3, input=[
        {"role": "developer", "content": "Sys."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "one"}, {"type": "input_text", "text": "two"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"role": "user", "content": "three"},
    ])  # fmt: skip
    body = r.json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["usage"]["output_tokens"] == 3
    assert body["max_output_tokens"] == 3
    text = prompt_text(registry)
    assert "system\nSys." in text and "user\none\ntwo" in text and "assistant\nok" in text and "user\nthree" in text


def test_previous_response_id_chain_and_input_items(rclient: TestClient, registry: FakeRegistry) -> None:
    first = create(rclient, input="first question", instructions="only for turn one").json()
    second = create(rclient, input="second question", previous_response_id=first["id"]).json()
    assert second["previous_response_id"] == first["id"]
    text = prompt_text(registry)
    assert "only for turn one" not in text  # instructions do not carry over
    assert text.index("first question") < text.index(GREEDY_REPLY) < text.index("second question")
    third = create(rclient, input=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                   previous_response_id=second["id"]).json()  # fmt: skip
    assert prompt_text(registry).count(GREEDY_REPLY) == 2

    page = rclient.get(f"/v1/responses/{third['id']}/input_items", headers=ADMIN).json()
    assert page["object"] == "list" and page["has_more"] is False
    assert [i["content"][0]["text"] for i in page["data"]] == ["b", "a"]  # newest first by default
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
    asc = rclient.get(f"/v1/responses/{third['id']}/input_items?order=asc&limit=1", headers=ADMIN).json()
    assert [i["content"][0]["text"] for i in asc["data"]] == ["a"] and asc["has_more"] is True
    rest = rclient.get(
        f"/v1/responses/{third['id']}/input_items?order=asc&after={asc['last_id']}", headers=ADMIN
    ).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["b"] and rest["has_more"] is False


def test_stream_event_sequence(rclient: TestClient) -> None:
    r = create(rclient, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in r.text
    evs = events(r)
    types = [e["type"] for e in evs]
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]  # fmt: skip
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    deltas = "".join(e["delta"] for e in evs if e["type"] == "response.output_text.delta")
    final = evs[-1]["response"]
    assert deltas == GREEDY_REPLY == final["output"][0]["content"][0]["text"]
    assert (
        evs[0]["response"]["status"] == "in_progress"
        and final["status"] == "completed"
        and final["usage"]["output_tokens"] > 0
    )
    assert rclient.get(f"/v1/responses/{final['id']}", headers=ADMIN).json() == final


def test_stream_incomplete_and_failure(rclient: TestClient) -> None:
    evs = events(create(rclient, stream=True, max_output_tokens=2))
    assert evs[-1]["type"] == "response.incomplete" and evs[-1]["response"]["incomplete_details"] == {
        "reason": "max_output_tokens"
    }
    evs = events(create(rclient, stream=True, input="LATEFAIL please"))
    assert evs[-1]["type"] == "response.failed"
    failed = evs[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "engine_error"
    assert rclient.get(f"/v1/responses/{failed['id']}", headers=ADMIN).status_code == 404  # failed turns are not stored


def test_store_false_and_delete(rclient: TestClient) -> None:
    unstored = create(rclient, store=False).json()
    assert unstored["store"] is False
    assert rclient.get(f"/v1/responses/{unstored['id']}", headers=ADMIN).status_code == 404
    r = create(rclient, previous_response_id=unstored["id"])
    assert r.status_code == 404 and r.json()["error"]["param"] == "previous_response_id"

    kept = create(rclient).json()
    d = rclient.delete(f"/v1/responses/{kept['id']}", headers=ADMIN)
    assert d.status_code == 200 and d.json() == {"id": kept["id"], "object": "response", "deleted": True}
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/input_items")]:
        assert rclient.request(method, f"/v1/responses/{kept['id']}{path}", headers=ADMIN).status_code == 404
    assert create(rclient, previous_response_id=kept["id"]).status_code == 404


def test_other_projects_responses_are_not_found(rclient: TestClient) -> None:
    mine = create(rclient).json()
    for method, path in [("GET", ""), ("DELETE", ""), ("GET", "/input_items")]:
        foreign = rclient.request(method, f"/v1/responses/{mine['id']}{path}", headers=OTHER)
        random_ = rclient.request(method, f"/v1/responses/resp_{'0' * 48}{path}", headers=OTHER)
        assert foreign.status_code == random_.status_code == 404
        assert foreign.json()["error"]["code"] == random_.json()["error"]["code"] == "not_found"
        assert foreign.json()["error"]["message"].replace(mine["id"], "X") == random_.json()["error"][
            "message"
        ].replace(f"resp_{'0' * 48}", "X")
    r = create(rclient, headers=OTHER, previous_response_id=mine["id"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert rclient.get(f"/v1/responses/{mine['id']}", headers=ADMIN).status_code == 200  # still there for its owner


@pytest.mark.parametrize(
    "body, param",
    [
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "mcp", "server_label": "x"}]}, "tools[0].type"),
        ({"tools": [{"type": "computer_use_preview"}]}, "tools[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://x"}]}]},
            "input[0].content[0].type",
        ),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": []}, "input"),
        ({"truncation": "auto"}, "truncation"),
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"previous_response_id": "../etc"}, "previous_response_id"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"model": "nope"}, "model"),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ],
)
def test_bad_input_is_an_openai_error(rclient: TestClient, body: dict[str, Any], param: str) -> None:
    r = create(rclient, **body)
    assert r.status_code in (400, 404), r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert create(rclient).status_code == 200  # healthy afterwards


def test_unknown_fields_ignored_and_no_database_is_503(settings: Settings, registry: FakeRegistry) -> None:
    with TestClient(create_app(settings, registry), raise_server_exceptions=False) as c:
        r = c.post("/v1/responses", json={"model": "tiny", "input": "Hi", "include": ["x"], "reasoning": {}})
        assert r.status_code == 503 and r.json()["error"]["code"] == "service_unavailable"
        r = c.post(
            "/v1/responses",
            json={"model": "tiny", "input": "Hi", "store": False, "service_tier": "auto", "temperature": 0},
        )
        assert r.status_code == 200 and r.json()["output"][0]["content"][0]["text"] == GREEDY_REPLY


def test_disconnect_mid_stream_aborts_bills_and_stores_nothing(
    rclient: TestClient, registry: FakeRegistry, meter: Any
) -> None:
    body = {"model": "tiny", "input": "SLOW please", "stream": True, "temperature": 0}
    with rclient.stream("POST", "/v1/responses", json=body, headers=ADMIN) as r:
        lines = r.iter_lines()
        created = json.loads(next(line for line in lines if line.startswith("data: "))[len("data: ") :])
        for _ in range(8):
            next(lines)
    engine = registry.engines["tiny"]
    meter.wait_settled()
    assert engine.submitted[-1].request_id in engine.aborted
    assert meter.settled and meter.settled[-1]["completion"] < len(GREEDY_REPLY.encode())
    assert rclient.get(f"/v1/responses/{created['response']['id']}", headers=ADMIN).status_code == 404
    assert create(rclient).status_code == 200  # still healthy


def test_rate_limited_before_anything_starts(rclient: TestClient, meter: Any) -> None:
    meter.refuse = True
    r = create(rclient)
    assert (
        r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded" and r.headers["retry-after"] == "4"
    )
