"""The Responses API's tables on SQLite and PostgreSQL: migration 0003, the conversation chain, retention, tenancy."""

from __future__ import annotations

from typing import Any

import pytest

from llmaas.errors import NotFound
from llmaas.store import responses as responses_db
from llmaas.store.db import Store, now


def save(
    store: Store, rid: str, prev: str | None = None, project: str = "default", expires_at: int | None = None
) -> None:
    body: dict[str, Any] = {"id": rid, "model": "tiny", "status": "completed", "previous_response_id": prev,
                            "created_at": now(), "output": [{"id": f"{rid}-out", "type": "message", "text": f"{rid} answer"}]}  # fmt: skip
    inputs = [{"id": f"{rid}-in{i}", "type": "message", "text": f"{rid} q{i}"} for i in range(2)]
    with store.session() as s:
        responses_db.save_response(
            s, project_id=project, body=body, input_items=inputs, output_items=body["output"], expires_at=expires_at
        )


def test_migration_0003_matches_the_models(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import llmaas.store.responses  # noqa: F401
    import llmaas.store.tenancy  # noqa: F401
    from llmaas.store.db import Base

    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert [d for d in diff if any(t in str(d) for t in ("responses", "response_items"))] == []


def test_conversation_walks_the_chain_in_order(store: Store) -> None:
    save(store, "resp_a")
    save(store, "resp_b", "resp_a")
    save(store, "resp_c", "resp_b")
    with store.session() as s:
        texts = [i["text"] for i in responses_db.conversation(s, "resp_c", project_id="default")]
    assert texts == ["resp_a q0", "resp_a q1", "resp_a answer", "resp_b q0", "resp_b q1", "resp_b answer",
                     "resp_c q0", "resp_c q1", "resp_c answer"]  # fmt: skip
    with store.session() as s:
        responses_db.delete_response(s, "resp_a", project_id="default")
    with store.session() as s:
        assert [i["text"] for i in responses_db.conversation(s, "resp_c", project_id="default")][
            0
        ] == "resp_b q0"  # gone is gone
        with pytest.raises(NotFound):
            responses_db.conversation(s, "resp_a", project_id="default")


def test_other_projects_and_expired_responses_are_not_found(store: Store) -> None:
    save(store, "resp_mine")
    save(store, "resp_old", expires_at=now() - 1)
    save(store, "resp_new", "resp_old")
    with store.session() as s:
        for call in (responses_db.get_response, responses_db.delete_response):
            with pytest.raises(NotFound):
                call(s, "resp_mine", project_id="other")
        with pytest.raises(NotFound):
            responses_db.conversation(s, "resp_mine", project_id="other")
        with pytest.raises(NotFound):
            responses_db.get_response(s, "resp_old", project_id="default")
        assert [i["text"] for i in responses_db.conversation(s, "resp_new", project_id="default")][0] == "resp_new q0"
    with store.session() as s:
        assert responses_db.purge_expired(s) == 1
    with store.session() as s:
        assert responses_db.get_response(s, "resp_mine", project_id="default").status == "completed"


def test_input_items_page(store: Store) -> None:
    save(store, "resp_p")
    with store.session() as s:
        page, more = responses_db.list_input_items(s, "resp_p", project_id="default", after=None, limit=1, order="asc")
        assert [i["id"] for i in page] == ["resp_p-in0"] and more
        page, more = responses_db.list_input_items(
            s, "resp_p", project_id="default", after="resp_p-in0", limit=5, order="asc"
        )
        assert [i["id"] for i in page] == ["resp_p-in1"] and not more
        page, _ = responses_db.list_input_items(s, "resp_p", project_id="default", after=None, limit=5, order="desc")
        assert [i["id"] for i in page] == ["resp_p-in1", "resp_p-in0"]
