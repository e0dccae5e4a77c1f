"""In-process API fixtures: the real app around a fake engine registry, called through httpx's ASGI transport."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from llmaas.api.app import create_app
from llmaas.config import Settings
from llmaas.errors import RateLimited, Unauthenticated
from llmaas.tenancy.types import Principal, Reservation
from tests.support.fakes import FakeFinetuned, FakeRegistry


class RecordingMeter:
    """Admits (or refuses when told), records every admit/settle, sends rate-limit headers."""

    def __init__(self) -> None:
        self.admitted: list[dict[str, Any]] = []
        self.settled: list[dict[str, Any]] = []
        self.refuse = False

    async def admit(self, principal: Principal, *, model: str, route: str, request_id: str, tokens: int) -> Reservation:
        if self.refuse:
            raise RateLimited(
                "Rate limit reached for requests.", retry_after=3.2, headers={"x-ratelimit-remaining-requests": "0"}
            )
        self.admitted.append(dict(model=model, route=route, tokens=tokens, project=principal.project_id))
        return Reservation(
            principal, model, tokens, request_id, route, headers={"x-ratelimit-remaining-requests": "99"}
        )

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, status: int, latency_s: float
    ) -> None:
        self.settled.append(
            dict(prompt=prompt_tokens, completion=completion_tokens, status=status, model=reservation.model)
        )

    def wait_settled(self, timeout_s: float = 2.0) -> None:
        """Until a request has settled: the server notices a client's disconnect asynchronously."""
        deadline = time.monotonic() + timeout_s
        while not self.settled and time.monotonic() < deadline:
            time.sleep(0.02)


class KeyAuth:
    """sk-admin -> admin of `default`; sk-a -> project proj-a limited to tiny + its fine-tuned model; else 401."""

    async def authenticate(self, authorization: str | None) -> Principal:
        if authorization == "Bearer sk-admin":
            return Principal("default", "k0", is_admin=True)
        if authorization == "Bearer sk-a":
            return Principal("proj-a", "k1", allowed_models=frozenset({"tiny", "ft:tiny:proj-a:mine:ftjob-1"}))
        raise Unauthenticated("Incorrect API key provided.")


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(auth=False, data_dir=tmp_path, default_max_tokens=64, limits={"max_body_bytes": 4096})


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def meter() -> RecordingMeter:
    return RecordingMeter()


@pytest.fixture
def client(settings: Settings, registry: FakeRegistry, meter: RecordingMeter) -> Iterator[TestClient]:
    app = create_app(settings, registry, meter=meter, finetuned=FakeFinetuned())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def authed_client(settings: Settings, registry: FakeRegistry, meter: RecordingMeter) -> Iterator[TestClient]:
    app = create_app(settings, registry, meter=meter, auth=KeyAuth(), finetuned=FakeFinetuned())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
