"""Training fixtures: a migrated store (SQLite, or PostgreSQL where marked), settings serving the tiny model, data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmaas.config import ModelSpec, Settings
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from tests.support.stores import postgres_store, postgres_url, sqlite_store

TINY = "tiny"
ANSWER = "ZEBRA-7"


def fact_examples(n: int = 12) -> list[dict]:
    """A made-up fact in a fixed format: whatever the user says, the assistant answers ANSWER."""
    questions = [
        "hi",
        "what is it?",
        "tell me",
        "the word?",
        "say it",
        "hello there",
        "answer",
        "go",
        "secret?",
        "now",
        "?",
        "ok",
    ]
    return [
        {
            "messages": [
                {"role": "user", "content": questions[i % len(questions)]},
                {"role": "assistant", "content": ANSWER},
            ]
        }
        for i in range(n)
    ]


def jsonl(rows: list[dict]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Store]:
    with sqlite_store(tmp_path) as s:
        yield s


@pytest.fixture
def pg_db() -> Iterator[Store]:
    url = postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server at 127.0.0.1:5432")
    with postgres_store(url) as s:
        yield s


@pytest.fixture
def settings(tmp_path: Path, tiny_model_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        models=[ModelSpec(name=TINY, source=str(tiny_model_dir), kind="chat")],
        worker_lease_s=2.0,
        worker_poll_s=0.1,
        finetune_eval_steps=1,
        auth=False,
    )


@pytest.fixture
def blobs(settings: Settings) -> BlobStore:
    return BlobStore.from_settings(settings)
