"""create_app(): the FastAPI application: state, lifespan, body cap, error handlers and routers.

Every router in PROTECTED_ROUTERS is mounted behind `Depends(get_principal)` (authenticated by default); routers in
PUBLIC_ROUTERS serve only paths listed in `deps.PUBLIC_PATHS`. A new resource adds its router module to the imports
and to one of the two lists. This file does not load models or open databases: `llmaas.services.build_runtime`
builds those and passes them in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import APIRouter, Depends, FastAPI

from llmaas import __version__
from llmaas.api.body_limit import BodyLimitMiddleware
from llmaas.api.deps import get_principal
from llmaas.api.errors import install_error_handlers
from llmaas.api.middleware import install_middleware
from llmaas.api.routes import (
    admin,
    batches,
    chat,
    classifications,
    completions,
    embeddings,
    files,
    fine_tuning,
    health,
    responses,
    usage,
)
from llmaas.api.routes import metrics as metrics_routes
from llmaas.api.routes import models as models_routes
from llmaas.api.serving.responses import ResponseStore
from llmaas.config import Settings
from llmaas.console import router as console_router
from llmaas.engine.protocol import Models
from llmaas.metrics import ServingMetrics
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store
from llmaas.tenancy.limits import InProcessLimiter, NotFoundGuard
from llmaas.tenancy.types import AuthBackend, Meter, NullMeter
from llmaas.training.registry import FineTunedModels

# Protected = every route needs a key (or --no-auth); public ones serve only paths in `deps.PUBLIC_PATHS`.
PROTECTED_ROUTERS: tuple[APIRouter, ...] = (
    models_routes.router,
    chat.router,
    responses.router,
    completions.router,
    embeddings.router,
    classifications.router,
    files.router,
    batches.router,
    fine_tuning.router,
    usage.router,
    admin.router,
)
PUBLIC_ROUTERS: tuple[APIRouter, ...] = (health.router, metrics_routes.router)

DESCRIPTION = """OpenAI-compatible API of llmaas. Point the official `openai` client's `base_url` at `/v1`.
Every endpoint except health, readiness, metrics and these docs needs `Authorization: Bearer sk-…`."""


class Component(Protocol):
    """A part of the process that lives as long as the app (tenancy's runtime, the fine-tuning worker)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


def _summarized(router: APIRouter) -> APIRouter:
    for route in router.routes:  # each route's docstring's first line is its OpenAPI summary
        endpoint = getattr(route, "endpoint", None)
        doc = (endpoint.__doc__ or "").strip() if endpoint is not None else ""
        if doc and not getattr(route, "summary", None):
            route.summary = doc.splitlines()[0].rstrip(".")  # type: ignore[attr-defined]  # an APIRoute: it has a summary
    return router


def create_app(
    settings: Settings,
    models: Models,
    *,
    meter: Meter | None = None,
    auth: AuthBackend | None = None,
    store: Store | None = None,
    blobs: BlobStore | None = None,
    responses: ResponseStore | None = None,
    finetuned: FineTunedModels | None = None,
    components: Sequence[Component] = (),
) -> FastAPI:
    """The app around a model registry. `auth=None` means every caller is the local admin (--no-auth, tests).

    The server passes every service `services.build_runtime` built. A bare app (tests) given a database but no blob
    store or response store gets its own, from settings, so its file, batch and response routes work.

    `components` (e.g. tenancy's runtime) get `await start()` after the registry starts and `await close()` before
    it stops, in reverse order.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await models.start()
        started: list[Component] = []
        try:
            for c in components:
                await c.start()
                started.append(c)
            yield
        finally:
            for c in reversed(started):
                await c.close()
            await models.shutdown()

    app = FastAPI(title="llmaas", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.models = models
    app.state.meter = meter if meter is not None else NullMeter()
    app.state.metrics = ServingMetrics(m.name for m in settings.models)  # each HTTP call reports here (deps.Call)
    app.state.auth = auth
    app.state.store = store
    if blobs is None and store is not None:
        blobs = BlobStore.from_settings(settings)
    app.state.blobs = blobs
    app.state.responses = (
        responses if responses is not None else ResponseStore(store, settings.responses_retention_days)
    )
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
    install_middleware(
        app, settings
    )  # ops, outermost: request id, Host allowlist, CORS, security headers, metrics, access log

    for router in PROTECTED_ROUTERS:
        app.include_router(_summarized(router), dependencies=[Depends(get_principal)])
    for router in PUBLIC_ROUTERS:
        app.include_router(_summarized(router))
    # The web console: public static files only (its paths are in deps.PUBLIC_PATHS); it acts through the API above.
    app.include_router(console_router)
    return app
