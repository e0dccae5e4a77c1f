"""The Annotated vocabulary routes use: who is calling (`PrincipalDep`, `get_admin`), the app's store (`StoreDep`),
and everything a serving handler needs about one call (`CallDep`).

Every router is mounted with `Depends(get_principal)` (see app.py), so every route is authenticated unless its path is
in `PUBLIC_PATHS`; tests/api/test_auth_walk.py walks `app.routes` and fails on any route that is neither.
Auth decides on the ASGI scope (the router's own path), never on a rebuilt URL or the Host header.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader

from llmaas.config import Settings
from llmaas.console import PUBLIC_PATHS as CONSOLE_PATHS
from llmaas.engine.protocol import Models
from llmaas.engine.types import INTERACTIVE
from llmaas.errors import PermissionDenied
from llmaas.metrics import ServingMetrics
from llmaas.store.db import Store
from llmaas.tenancy.types import LOCAL_ADMIN, AuthBackend, Meter, Principal
from llmaas.training.registry import FineTunedModels

# Routes anyone may call without a key: keep this short (SECURITY.md #5). Exact route paths; the console's own two
# (its page and its static files) come from the console package.
PUBLIC_PATHS: frozenset[str] = frozenset(
    {"/health", "/ready", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", *CONSOLE_PATHS}
)

# Shows the "Authorize" button in /docs; the raw header goes to the auth backend unchanged.
_authorization = APIKeyHeader(name="Authorization", auto_error=False, description="Bearer sk-…")


async def get_principal(
    request: Request, authorization: Annotated[str | None, Security(_authorization)] = None
) -> Principal:
    """The caller, from the Authorization header (raises Unauthenticated); the local admin when auth is off."""
    auth: AuthBackend | None = request.app.state.auth
    principal = LOCAL_ADMIN if auth is None else await auth.authenticate(authorization)
    request.state.principal = principal  # for logs and metrics middleware, and the not-found count (api/errors.py)
    guard = getattr(request.app.state, "not_found_guard", None)
    if guard is not None:
        await guard.check(principal.key_id)  # a key that scanned for ids waits (429) before anything is looked up
    return principal


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise PermissionDenied("This endpoint needs an admin key.")
    return principal


def get_store(request: Request) -> Store | None:
    store: Store | None = request.app.state.store
    return store


PrincipalDep = Annotated[Principal, Depends(get_principal)]
StoreDep = Annotated[Store | None, Depends(get_store)]  # None: a server without a database (the admin API says 503)


@dataclass(slots=True)
class Call:
    """What a framework-free serving handler needs to know about one API call."""

    principal: Principal
    settings: Settings
    models: Models  # chat(name), embedder(name), list()
    meter: Meter
    finetuned: FineTunedModels | None  # training's lookup(model, principal) / list(principal); None when absent
    priority: int = INTERACTIVE  # EngineRequest.priority of its sequences (the batch runner's calls: BATCH)
    metrics: ServingMetrics | None = None  # what an HTTP call reports (the app's, from create_app); None: nothing


async def get_call(request: Request, principal: PrincipalDep) -> Call:
    state = request.app.state
    return Call(principal, state.settings, state.models, state.meter, state.finetuned, metrics=state.metrics)


CallDep = Annotated[Call, Depends(get_call)]


# --- route walking (the default-deny test, and anyone auditing the app) -------------------------------


def iter_routes(app: FastAPI) -> Iterator[tuple[str, Any, Any]]:
    """(path, dependant or None, route) for every route, through included routers (FastAPI ≥ 0.16x includes lazily)."""
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:
            for ctx in contexts():
                yield ctx.path, ctx.dependant, ctx.original_route
        else:
            yield getattr(route, "path", ""), getattr(route, "dependant", None), route


def requires_principal(dependant: Any) -> bool:
    """True when `get_principal` runs for this route (directly or through any sub-dependency)."""
    if dependant is None:
        return False
    return dependant.call is get_principal or any(requires_principal(d) for d in dependant.dependencies)
