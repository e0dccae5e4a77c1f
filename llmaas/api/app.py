"""create_app(): the FastAPI application: state, lifespan, body cap, error handlers and routers.

Every router in PROTECTED_ROUTERS is mounted behind `Depends(get_principal)` (authenticated by default); routers in
PUBLIC_ROUTERS serve only paths listed in `deps.PUBLIC_PATHS`. A module not written yet is skipped (as the CLI does),
so each team adds its router by adding its module name here. This file does not load models or open databases:
server.py builds those and passes them in.
"""

from __future__ import annotations

import importlib
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

from fastapi import Depends, FastAPI

from llmaas import __version__
from llmaas.api.body_limit import BodyLimitMiddleware
from llmaas.api.context import Meter, NullMeter
from llmaas.api.deps import get_principal
from llmaas.api.errors import install_error_handlers
from llmaas.api.middleware import install_middleware
from llmaas.config import Settings
from llmaas.tenancy.limits import InProcessLimiter, NotFoundGuard

# Modules under llmaas.api.routes exposing `router`. Protected = every route needs a key (or --no-auth).
PROTECTED_ROUTERS = ["models", "chat", "responses", "completions", "embeddings", "classifications", "files", "batches", "fine_tuning", "usage", "admin"]
PUBLIC_ROUTERS = ["health", "metrics"]

DESCRIPTION = """OpenAI-compatible API of llmaas. Point the official `openai` client's `base_url` at `/v1`.
Every endpoint except health, readiness, metrics and these docs needs `Authorization: Bearer sk-…`."""


def _import_router(name: str) -> Any | None:
    try:
        module = importlib.import_module(f"llmaas.api.routes.{name}")
    except ModuleNotFoundError as exc:  # a router not written yet
        if exc.name != f"llmaas.api.routes.{name}":
            raise
        return None
    router = getattr(module, "router")
    for route in router.routes:  # each route's docstring's first line is its OpenAPI summary
        endpoint = getattr(route, "endpoint", None)
        doc = (endpoint.__doc__ or "").strip() if endpoint is not None else ""
        if doc and not getattr(route, "summary", None):
            route.summary = doc.splitlines()[0].rstrip(".")
    return router


def create_app(
    settings: Settings,
    models: Any,
    *,
    meter: Meter | None = None,
    auth: Any | None = None,
    store: Any | None = None,
    finetuned: Any | None = None,
    components: Sequence[Any] = (),
) -> FastAPI:
    """The app around a model registry. `auth=None` means every caller is the local admin (--no-auth, tests).

    `components` (e.g. tenancy's runtime) get `await start()` after the registry starts and `await close()` (or
    `shutdown()`) before it stops, in reverse order.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await models.start()
        started: list[Any] = []
        try:
            for c in components:
                if hasattr(c, "start"):
                    await c.start()
                started.append(c)
            yield
        finally:
            for c in reversed(started):
                stop = getattr(c, "close", None) or getattr(c, "shutdown", None)
                if stop is not None:
                    await stop()
            await models.shutdown()

    app = FastAPI(title="llmaas", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.models = models
    app.state.meter = meter if meter is not None else NullMeter()
    app.state.auth = auth
    app.state.store = store
    app.state.finetuned = finetuned
    # Not-found answers are counted per key in the meter's limiter (shared by replicas with Redis), else in-process.
    limiter = getattr(app.state.meter, "limiter", None) or InProcessLimiter()
    app.state.not_found_guard = NotFoundGuard(limiter, settings.limits.max_not_found_per_minute)

    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.limits.max_body_bytes,
        max_upload_bytes=settings.limits.max_upload_bytes,
    )
    install_middleware(app, settings)  # ops, outermost: request id, Host allowlist, CORS, security headers, metrics, access log

    for name in PROTECTED_ROUTERS:
        router = _import_router(name)
        if router is not None:
            app.include_router(router, dependencies=[Depends(get_principal)])
    for name in PUBLIC_ROUTERS:
        router = _import_router(name)
        if router is not None:
            app.include_router(router)
    # The web console: public static files only (its paths are in deps.PUBLIC_PATHS); it acts through the API above.
    from llmaas.console import router as console_router

    app.include_router(console_router)
    return app
