"""Tenancy inside the real app: the chat route over the fake engine (`tests.support.fakes`), with tenancy's auth,
meter and store.

Covers what only the whole stack shows: x-ratelimit headers on model responses, exactly-N admission over HTTP (on
the in-process and the Redis limiter), model scopes, and a stream the client drops being billed for what was
generated (served by uvicorn on a free loopback port, since an in-process transport can't drop a stream).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmaas.api.app import create_app
from llmaas.config import Settings
from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store
from llmaas.tenancy import keys
from llmaas.tenancy.limits import RedisLimiter
from llmaas.tenancy.runtime import Tenancy
from tests.support.fakes import FakeRegistry
from tests.support.stores import REDIS_URL, redis_available, unique_prefix


def _app(store: Store, tmp_path: Path, *, redis_prefix: str | None = None) -> tuple[Any, Tenancy]:
    settings = Settings(data_dir=tmp_path, usage_flush_s=0.05)
    tenancy = Tenancy.from_settings(settings, store=store)
    if redis_prefix is not None:
        tenancy.limiter = tenancy.meter.limiter = RedisLimiter(REDIS_URL, prefix=redis_prefix)
    app = create_app(
        settings, FakeRegistry(), meter=tenancy.meter, auth=tenancy.auth, store=store, components=[tenancy]
    )
    return app, tenancy


def _chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 16, **extra}


def _usage(store: Store, project_id: str = "default") -> list[dict[str, Any]]:
    with store.session() as s:
        return tenancy_db.usage_summary(s, project_id=project_id, group_by="key")


@pytest.mark.parametrize("limiter", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_chat_is_limited_and_metered(store: Store, tmp_path: Path, limiter: str) -> None:
    if limiter == "redis" and not redis_available():
        pytest.skip("no Redis server")
    app, tenancy = _app(store, tmp_path, redis_prefix=unique_prefix() if limiter == "redis" else None)
    row, secret = keys.create_key(store, project_id="default", name="rl", rpm=20, tpm=100_000)
    _, scoped = keys.create_key(store, project_id="default", name="scoped", models=["emb"])
    h = {"Authorization": f"Bearer {secret}"}

    async def run() -> None:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                r = await c.post("/v1/chat/completions", json=_chat(), headers={"Authorization": f"Bearer {scoped}"})
                assert r.status_code in (403, 404), r.text  # a key scoped to other models can't use this one
                rs = await asyncio.gather(*(c.post("/v1/chat/completions", json=_chat(), headers=h) for _ in range(50)))
                ok = [r for r in rs if r.status_code == 200]
                limited = [r for r in rs if r.status_code == 429]
                assert (len(ok), len(limited)) == (20, 30)
                assert ok[0].headers["x-ratelimit-limit-requests"] == "20"
                assert ok[0].headers["x-ratelimit-limit-tokens"] == "100000"
                assert "x-ratelimit-reset-tokens" in ok[0].headers
                assert limited[0].json()["error"]["code"] == "rate_limit_exceeded"
                assert int(limited[0].headers["retry-after"]) >= 1
                completion = sum(r.json()["usage"]["completion_tokens"] for r in ok)
        rows = [g for g in _usage(store) if g["group"] == row.id]
        assert rows[0]["requests"] == 50 and rows[0]["completion_tokens"] == completion  # 429s recorded, 0 tokens

    asyncio.run(run())  # the lifespan closed tenancy, and with it the Redis limiter


def test_dropped_stream_is_billed_for_what_was_generated(store: Store, tmp_path: Path) -> None:
    import uvicorn

    app, tenancy = _app(store, tmp_path)
    row, secret = keys.create_key(store, project_id="default", name="stream")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            body = _chat("SLOW please", stream=True, max_tokens=200)
            with c.stream(
                "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}
            ) as r:
                assert r.status_code == 200
                chunks = 0
                for line in r.iter_lines():
                    chunks += line.startswith("data:")
                    if chunks >= 4:
                        break  # hang up mid-stream
        deadline = time.monotonic() + 10
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = [g for g in _usage(store) if g["group"] == row.id]
            if rows:
                break
            time.sleep(0.05)
        assert rows and rows[0]["requests"] == 1
        assert 0 < rows[0]["completion_tokens"] < 30  # the fake reply is ~30 tokens at 50 ms each; we left early
    finally:
        server.should_exit = True
        thread.join(timeout=15)
