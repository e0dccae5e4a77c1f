"""The Responses API end to end through the official `openai` client against `llmaas serve` (the tiny model):
create (string and items), stream (raw events and the SDK's stream helper), previous_response_id chains, retrieve,
input items, delete, errors, tenant isolation and usage rows, a restart that keeps the conversation, and two
replicas on one PostgreSQL continuing each other's conversations.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

from llmaas.store.db import Store
from llmaas.store.tenancy import UsageRecord
from tests.support.server import LlmaasProcess, serve


def tiny_only(tiny_model_dir: Path, **settings: Any) -> dict[str, Any]:
    """The tiny model alone (no embedding model: these servers start faster)."""
    return {"models": [{"name": "tiny", "source": str(tiny_model_dir), "kind": "chat", "kv_cache_mb": 16}],
            "default_max_tokens": 16, **settings}  # fmt: skip


def client_for(server: LlmaasProcess, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key or server.api_key or "none", max_retries=0, timeout=120)


def test_create_retrieve_chain_items_delete(openai_client: Any) -> None:
    first = openai_client.responses.create(model="tiny", input="Say hi.", instructions="Be brief.", temperature=0,
                                           max_output_tokens=8, metadata={"run": "e2e"})  # fmt: skip
    assert first.id.startswith("resp_") and first.object == "response" and first.status in ("completed", "incomplete")
    assert first.output[0].type == "message" and first.output_text == first.output[0].content[0].text
    assert first.usage.total_tokens == first.usage.input_tokens + first.usage.output_tokens
    assert first.metadata == {"run": "e2e"}
    if first.status == "incomplete":  # a random-weights model rarely stops by itself within 8 tokens
        assert first.incomplete_details.reason == "max_output_tokens" and first.usage.output_tokens == 8

    second = openai_client.responses.create(
        model="tiny", previous_response_id=first.id, temperature=0, max_output_tokens=8, instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "And again."}]}],
    )  # fmt: skip
    assert second.previous_response_id == first.id
    # The continuation's prompt holds the first turn (question and answer): more input tokens than the first turn.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    # ... and the prefix cache still holds the first turn's blocks (same instructions, so the same prefix).
    assert second.usage.input_tokens_details.cached_tokens >= 16

    got = openai_client.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text and got.usage == second.usage
    items = openai_client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"] and items.data[0].content[0].text == "And again."
    assert items.data[0].role == "user" and items.data[0].id.startswith("msg_")

    openai_client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as missing:
        openai_client.responses.create(model="tiny", input="x", previous_response_id=first.id)
    assert missing.value.code == "not_found" and missing.value.param == "previous_response_id"


def test_stream_events_and_sdk_helper(openai_client: Any) -> None:
    events = list(
        openai_client.responses.create(model="tiny", input="Count.", temperature=0, max_output_tokens=12, stream=True)
    )
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert types[-1] in ("response.completed", "response.incomplete")
    seq = [e.sequence_number for e in events]
    assert seq == sorted(set(seq)) and seq[0] == 0
    final = events[-1].response
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == next(e.text for e in events if e.type == "response.output_text.done")
    assert openai_client.responses.retrieve(final.id).output_text == deltas

    with openai_client.responses.stream(model="tiny", input="More.", temperature=0, max_output_tokens=6,
                                        previous_response_id=final.id) as stream:  # fmt: skip
        seen = list(stream)
        if seen[-1].type == "response.completed":  # the helper's final response needs a completed (not cut) one
            assert stream.get_final_response().id == seen[-1].response.id
    text = "".join(e.delta for e in seen if e.type == "response.output_text.delta")
    done = seen[-1].response
    assert done.output_text == text and done.previous_response_id == final.id


def test_bad_input_is_an_openai_error_and_the_server_stays_healthy(
    openai_client: Any, tiny_server: LlmaasProcess
) -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"previous_response_id": "resp_" + "0" * 48}, openai.NotFoundError, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, openai.BadRequestError, "tools[0].type"),
        ({"background": True}, openai.BadRequestError, "background"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://example.com/x.png"}]}]},
         openai.BadRequestError, "input[0].content[0].type"),
        ({"model": "no-such-model"}, openai.NotFoundError, "model"),
    ]  # fmt: skip
    for extra, error, param in cases:
        body = {"model": "tiny", "input": "hi", **extra}
        with pytest.raises(error) as exc:
            openai_client.responses.create(**body)
        assert exc.value.param == param, (extra, exc.value.body)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve("resp_" + "1" * 48)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.input_items.list("not-an-id")
    assert tiny_server.healthy()
    assert openai_client.responses.create(model="tiny", input="still fine", max_output_tokens=2).status == "incomplete"


def test_restart_keeps_conversations_per_project(tmp_path: Path, tiny_model_dir: Path) -> None:
    """State lives in the database: after a restart on the same data dir the conversation continues; another
    project's key sees none of it (404 exactly like a random id); usage rows carry the route and the response id."""
    config = tiny_only(tiny_model_dir, usage_flush_s=0.2)
    server = serve(tmp_path, config, auth=True, worker=False)
    admin_key = server.api_key
    try:
        with httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {admin_key}"}) as http:
            assert http.post("/admin/projects", json={"id": "other", "name": "Other"}).status_code == 200
            other_key = http.post("/admin/keys", json={"project_id": "other", "name": "o"}).json()["key"]
        mine, theirs = client_for(server), client_for(server, other_key)
        first = mine.responses.create(model="tiny", input="Remember 7.", temperature=0, max_output_tokens=4)
        random_id = "resp_" + secrets.token_hex(24)
        calls: dict[str, Callable[[str], Any]] = {
            "retrieve": lambda rid: theirs.responses.retrieve(rid),
            "input_items": lambda rid: theirs.responses.input_items.list(rid),
            "delete": lambda rid: theirs.responses.delete(rid),
            "continue": lambda rid: theirs.responses.create(model="tiny", input="x", previous_response_id=rid),
        }
        for name, call in calls.items():
            foreign, unknown = not_found(call, first.id), not_found(call, random_id)
            assert foreign.code == unknown.code == "not_found", name
            assert foreign.param == unknown.param, name
            assert foreign.message.replace(first.id, "ID") == unknown.message.replace(random_id, "ID"), name
    finally:
        server.stop()

    again = serve(tmp_path, config, auth=True, worker=False, wait=False)  # not a fresh data dir: no new admin key
    try:
        again.wait_ready()
        mine = client_for(again, admin_key)
        assert mine.responses.retrieve(first.id).output_text == first.output_text
        second = mine.responses.create(model="tiny", input="What was it?", previous_response_id=first.id,
                                       temperature=0, max_output_tokens=4)  # fmt: skip
        assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    finally:
        again.stop()
    store = Store(f"sqlite:///{again.data_dir / 'llmaas.db'}")
    with store.session() as s:
        rows = s.scalars(select(UsageRecord).where(UsageRecord.route == "/v1/responses")).all()
        assert {first.id, second.id} <= {r.request_id for r in rows}
        assert all(r.completion_tokens > 0 and r.status == 200 for r in rows if r.request_id in (first.id, second.id))
    store.close()


def not_found(call: Callable[[str], Any], response_id: str) -> openai.NotFoundError:
    with pytest.raises(openai.NotFoundError) as exc:
        call(response_id)
    return exc.value


@pytest.fixture
def pg_database() -> Iterator[str]:
    from tests.support.stores import postgres_url, scratch_database

    base = postgres_url()
    if base is None:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    with scratch_database(base, "llmaas_resp") as url:
        yield url


@pytest.mark.postgres
def test_two_replicas_on_one_postgres_continue_each_others_conversations(
    tmp_path: Path, tiny_model_dir: Path, pg_database: str
) -> None:
    config = tiny_only(tiny_model_dir, database_url=pg_database)
    a = serve(tmp_path / "a", config, auth=False, worker=False)
    b = serve(tmp_path / "b", config, auth=False, worker=False)
    try:
        on_a, on_b = client_for(a), client_for(b)
        t1 = on_a.responses.create(model="tiny", input="Turn one.", temperature=0, max_output_tokens=4)
        t2 = on_b.responses.create(
            model="tiny", input="Turn two.", previous_response_id=t1.id, temperature=0, max_output_tokens=4
        )
        t3 = on_a.responses.create(
            model="tiny", input="Turn three.", previous_response_id=t2.id, temperature=0, max_output_tokens=4
        )
        assert t3.usage.input_tokens > t2.usage.input_tokens > t1.usage.input_tokens
        assert on_b.responses.retrieve(t3.id).output_text == t3.output_text
        on_b.responses.delete(t1.id)
        with pytest.raises(openai.NotFoundError):
            on_a.responses.retrieve(t1.id)
    finally:
        a.stop()
        b.stop()
