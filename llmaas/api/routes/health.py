"""Liveness and readiness: `GET /health` (the process answers) and `GET /ready` (it should get traffic).

What this is: two public routes (no auth: probes carry no key) and `mark_draining(app)`, which the server calls when
SIGTERM arrives so readiness turns 503 while in-flight streams finish. What it isn't: a status page; bodies say
which check failed ("models", "database", "shutdown") and never why in detail (no URLs, no errors).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from llmaas.store.db import ping

router = APIRouter(tags=["operations"])

DB_TIMEOUT_S = 2.0


def mark_draining(app: Any) -> None:
    """Readiness answers 503 from now on (SIGTERM received: stop admitting, let in-flight requests finish)."""
    app.state.draining = True


def is_draining(app: Any) -> bool:
    return bool(getattr(app.state, "draining", False))


@router.get("/health", include_in_schema=False)
async def health() -> dict[str, str]:
    """Alive: the process and its event loop answer."""
    return {"status": "ok"}


@router.get("/ready", include_in_schema=False)
async def ready(request: Request) -> JSONResponse:
    """Ready for traffic: models loaded, database reachable, not shutting down (503 otherwise)."""
    app = request.app
    checks = {
        "shutdown": "draining" if is_draining(app) else "ok",
        "models": "ok" if _models_loaded(getattr(app.state, "models", None)) else "not_loaded",
        "database": await _database(getattr(app.state, "store", None)),
    }
    ok = all(v in ("ok", "none") for v in checks.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)


def _models_loaded(models: Any) -> bool:
    if models is None:
        return False
    flag = getattr(models, "ready", None)
    if isinstance(flag, bool):
        return flag
    try:
        return len(models.list()) > 0
    except Exception:
        return False


async def _database(store: Any) -> str:
    """ "ok", "unreachable", or "none" when the app runs without a store (bare API, unit tests)."""
    if store is None:
        return "none"
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, store), DB_TIMEOUT_S)
    except Exception:
        return "unreachable"
    return "ok"


def _ping(store: Any) -> None:
    ping(store.engine)
