"""The tenancy HTTP surface in-process (SQLite and PostgreSQL): admin API, /v1/me, /v1/usage, 401/403/404/429 shapes.

The app here is the tenancy routers on a bare FastAPI with the API's error handlers and deps, plus one
metered echo route standing in for the serving layer (admit → respond with x-ratelimit headers → settle).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from llmaas.api.deps import PrincipalDep, get_principal
from llmaas.api.errors import install_error_handlers
from llmaas.api.routes import admin as admin_routes
from llmaas.api.routes import usage as usage_routes
from llmaas.config import Settings
from llmaas.store.db import Store
from llmaas.tenancy.runtime import Tenancy


def build_app(store: Store, settings: Settings) -> tuple[FastAPI, Tenancy]:
    tenancy = Tenancy.from_settings(settings, store=store)
    app = FastAPI()
    install_error_handlers(app)
    echo = APIRouter(dependencies=[Depends(get_principal)])

    @echo.post("/v1/echo")
    async def metered(request: Request, principal: PrincipalDep, response: Response) -> dict[str, Any]:
        body = await request.json()
        meter = request.app.state.meter
        res = await meter.admit(principal, model=body["model"], route="echo", request_id="r", tokens=body["tokens"])
        try:
            response.headers.update(res.headers)
            return {"ok": True}
        finally:
            await meter.settle(res, prompt_tokens=body["tokens"], completion_tokens=0, status=200, latency_s=0.0)

    app.include_router(echo)
    app.include_router(admin_routes.router)
    app.include_router(usage_routes.router)
    app.state.settings, app.state.store, app.state.auth, app.state.meter = settings, store, tenancy.auth, tenancy.meter
    return app, tenancy


@pytest.fixture
def api(store: Store, tmp_path: Any):
    settings = Settings(data_dir=tmp_path, usage_flush_s=0.05)
    app, tenancy = build_app(store, settings)

    async def client() -> httpx.AsyncClient:
        await tenancy.start()
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")

    return client, tenancy


def _h(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _is_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code
    return err


def test_admin_flow_me_usage_and_isolation(api) -> None:
    make_client, tenancy = api
    admin = tenancy.bootstrap_key

    async def run() -> None:
        async with await make_client() as c:
            r = await c.post("/admin/projects", json={"id": "acme", "name": "Acme", "rpm": 100}, headers=_h(admin))
            assert r.status_code == 200 and r.json()["id"] == "acme"
            _is_error(await c.post("/admin/projects", json={"id": "acme", "name": "x"}, headers=_h(admin)), 409)
            await c.post("/admin/projects", json={"id": "other", "name": "Other"}, headers=_h(admin))
            r = await c.post(
                "/admin/keys",
                json={"project_id": "acme", "name": "ci", "models": ["m1"], "tpm": 1000},
                headers=_h(admin),
            )
            created = r.json()
            secret, key_id = created["key"], created["id"]
            assert secret.startswith("sk-") and created["prefix"] == secret[:12]
            listed = (await c.get("/admin/keys", params={"project_id": "acme"}, headers=_h(admin))).json()
            assert [k["id"] for k in listed["data"]] == [key_id] and "key" not in listed["data"][0]
            assert "key" not in (await c.get(f"/admin/keys/{key_id}", headers=_h(admin))).json()

            me = (await c.get("/v1/me", headers=_h(secret))).json()
            assert me["project_id"] == "acme" and me["key_name"] == "ci" and me["models"] == ["m1"]
            assert me["limits"] == {"rpm": 100, "tpm": 1000, "monthly_token_budget": None}
            assert me["is_admin"] is False

            r = await c.post("/v1/echo", json={"model": "m1", "tokens": 7}, headers=_h(secret))
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit-requests"] == "100"
            assert r.headers["x-ratelimit-remaining-tokens"] == "993"
            await tenancy.usage.flush()
            usage = (await c.get("/v1/usage", params={"group_by": "key"}, headers=_h(secret))).json()
            assert usage == {
                "object": "list",
                "data": [
                    {"group": key_id, "requests": 1, "prompt_tokens": 7, "completion_tokens": 0, "total_tokens": 7}
                ],
            }
            day = (
                await c.get(
                    "/v1/usage", params={"group_by": "day", "start": 0, "end": int(time.time()) + 9}, headers=_h(secret)
                )
            ).json()
            assert day["data"][0]["requests"] == 1
            assert (await c.get("/v1/me", headers=_h(secret))).json()["usage_this_month"] == {"total_tokens": 7}

            # another project's usage: invisible to regular keys (404, as if absent); admins may read it
            _is_error(await c.get("/v1/usage", params={"project_id": "other"}, headers=_h(secret)), 404)
            _is_error(await c.get("/v1/usage", params={"project_id": "ghost"}, headers=_h(secret)), 404)
            assert (await c.get("/v1/usage", params={"project_id": "acme"}, headers=_h(secret))).status_code == 200
            r = await c.get("/v1/usage", params={"project_id": "acme"}, headers=_h(admin))
            assert r.json()["data"][0]["requests"] == 1
            _is_error(await c.get("/v1/usage", params={"project_id": "nope"}, headers=_h(admin)), 404)
            other = (await c.post("/admin/keys", json={"project_id": "other", "name": "o"}, headers=_h(admin))).json()
            assert (await c.get("/v1/usage", headers=_h(other["key"]))).json()["data"] == []

            # regular keys never reach admin routes
            for method, path in [
                ("GET", "/admin/projects"),
                ("POST", "/admin/keys"),
                ("GET", f"/admin/keys/{key_id}"),
                ("POST", f"/admin/keys/{key_id}/revoke"),
                ("PATCH", "/admin/projects/acme"),
            ]:
                _is_error(await c.request(method, path, json={}, headers=_h(secret)), 403, "insufficient_permissions")

            # PATCH a key: its limits, scope and name change at once; null lifts a limit
            r = await c.patch(
                f"/admin/keys/{key_id}",
                json={"rpm": 50, "tpm": None, "models": ["m1", "m2"], "name": "ci2"},
                headers=_h(admin),
            )
            assert (r.json()["rpm"], r.json()["tpm"], r.json()["models"], r.json()["name"]) == (
                50,
                None,
                ["m1", "m2"],
                "ci2",
            )
            me = (await c.get("/v1/me", headers=_h(secret))).json()
            assert me["limits"] == {
                "rpm": 50,
                "tpm": None,
                "monthly_token_budget": None,
            }  # the tighter of key and project
            assert me["models"] == ["m1", "m2"] and me["key_name"] == "ci2"
            for bad in [{"is_admin": True}, {"project_id": "other"}, {"rpm": 0}, {"expires_at": 1}]:
                _is_error(await c.patch(f"/admin/keys/{key_id}", json=bad, headers=_h(admin)), 400)
            _is_error(
                await c.patch(f"/admin/keys/{key_id}", json={"rpm": 9}, headers=_h(secret)),
                403,
                "insufficient_permissions",
            )

            # PATCH limits, revoke
            r = await c.patch("/admin/projects/acme", json={"rpm": None, "monthly_token_budget": 5}, headers=_h(admin))
            assert r.json()["rpm"] is None and r.json()["monthly_token_budget"] == 5
            _is_error(
                await c.post("/v1/echo", json={"model": "m1", "tokens": 6}, headers=_h(secret)),
                429,
                "insufficient_quota",
            )
            assert (await c.post(f"/admin/keys/{key_id}/revoke", headers=_h(admin))).json()["revoked_at"]
            err = _is_error(await c.get("/v1/me", headers=_h(secret)), 401, "invalid_api_key")
            assert "revoked" in err["message"]

    asyncio.run(run())


def test_privilege_fields_are_refused(api) -> None:
    make_client, tenancy = api
    admin = tenancy.bootstrap_key

    async def run() -> None:
        async with await make_client() as c:
            for body in [
                {"project_id": "default", "name": "x", "role": "owner"},
                {"project_id": "default", "name": "x", "rpm": -1},
                {"project_id": "default", "name": "x", "models": ["m"] * 1000},
                {"project_id": "default", "name": "x", "expires_at": 1},
                {"project_id": "../etc", "name": "x"},
                {"name": "x"},
            ]:
                _is_error(await c.post("/admin/keys", json=body, headers=_h(admin)), 400)
            _is_error(await c.post("/admin/projects", json={"name": "x", "id": "Bad Id"}, headers=_h(admin)), 400)
            _is_error(await c.patch("/admin/projects/default", json={"is_admin": True}, headers=_h(admin)), 400)
            _is_error(await c.get("/v1/usage", params={"group_by": "secret"}, headers=_h(admin)), 400)

    asyncio.run(run())


BAD_HEADERS = [
    None,
    "",
    "Bearer",
    "Basic Zm9vOmJhcg==",
    "Bearer sk-unknown",
    "Bearer ' OR 1=1 --",
    "bearer sk-" + "x" * 10_000,
]


def test_bad_keys_are_401(api) -> None:
    make_client, _ = api

    async def run() -> None:
        async with await make_client() as c:
            for header in BAD_HEADERS:
                headers = {} if header is None else {"Authorization": header}
                for path in ["/v1/me", "/v1/usage", "/admin/projects"]:
                    _is_error(await c.get(path, headers=headers), 401, "invalid_api_key")

    asyncio.run(run())


HOSTILE_IDS = [
    "x' OR '1'='1",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "a%00b",
    "key-; DROP TABLE api_keys",
    "%E2%80%AE",
    "a" * 300,
]


def test_hostile_ids_are_404(api) -> None:
    make_client, tenancy = api
    admin = tenancy.bootstrap_key

    async def run() -> None:
        async with await make_client() as c:
            for bad in HOSTILE_IDS:
                for path in [f"/admin/projects/{bad}", f"/admin/keys/{bad}"]:
                    _is_error(await c.get(path, headers=_h(admin)), 404)
                _is_error(await c.post(f"/admin/keys/{bad}/revoke", headers=_h(admin)), 404)
                _is_error(await c.patch(f"/admin/projects/{bad}", json={"name": "x"}, headers=_h(admin)), 404)
                _is_error(await c.patch(f"/admin/keys/{bad}", json={"name": "x"}, headers=_h(admin)), 404)
                assert (await c.get("/admin/projects", headers=_h(admin))).status_code == 200  # still healthy

    asyncio.run(run())


def test_rate_limit_over_http_exactly_20_of_50(api) -> None:
    make_client, tenancy = api
    admin = tenancy.bootstrap_key

    async def run() -> None:
        async with await make_client() as c:
            key = (
                await c.post("/admin/keys", json={"project_id": "default", "name": "rl", "rpm": 20}, headers=_h(admin))
            ).json()["key"]
            rs = await asyncio.gather(
                *(c.post("/v1/echo", json={"model": "m", "tokens": 1}, headers=_h(key)) for _ in range(50))
            )
            assert sum(r.status_code == 200 for r in rs) == 20
            limited = [r for r in rs if r.status_code == 429]
            assert len(limited) == 30
            err = _is_error(limited[0], 429, "rate_limit_exceeded")
            assert err["type"] == "rate_limit_exceeded"
            assert int(limited[0].headers["retry-after"]) >= 1
            assert limited[0].headers["x-ratelimit-remaining-requests"] == "0"

    asyncio.run(run())


class _NoModels:
    """The registry create_app needs, with no models at all (tenancy routes never touch it)."""

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def list(self) -> list[Any]:
        return []

    def stats(self) -> dict[str, Any]:
        return {}


def test_wired_into_create_app(store: Store, tmp_path: Any) -> None:
    """The real app: tenancy routers are protected, lifespan starts/closes tenancy (usage flushed at shutdown)."""
    from llmaas.api.app import create_app

    settings = Settings(data_dir=tmp_path, usage_flush_s=60)
    tenancy = Tenancy.from_settings(settings, store=store)
    app = create_app(settings, _NoModels(), meter=tenancy.meter, auth=tenancy.auth, store=store, components=[tenancy])
    admin = tenancy.bootstrap_key

    async def run() -> None:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                _is_error(await c.get("/v1/me"), 401)
                _is_error(await c.get("/admin/keys"), 401)
                me = (await c.get("/v1/me", headers=_h(admin))).json()
                assert me["is_admin"] and me["key_name"] == "bootstrap-admin" and me["project_id"] == "default"
                key = (
                    await c.post("/admin/keys", json={"project_id": "default", "name": "u"}, headers=_h(admin))
                ).json()
                _is_error(await c.get("/admin/keys", headers=_h(key["key"])), 403)
                res = await tenancy.meter.admit(
                    (await tenancy.auth.authenticate(f"Bearer {key['key']}")),
                    model="m",
                    route="chat",
                    request_id="x",
                    tokens=3,
                )
                await tenancy.meter.settle(res, prompt_tokens=1, completion_tokens=1, status=200, latency_s=0)
                assert tenancy.usage.pending == 1

    asyncio.run(run())
    from llmaas.store import tenancy as tenancy_db

    with store.session() as s:
        assert tenancy_db.usage_summary(s, project_id="default")[0]["requests"] == 1
