"""The one builder of llmaas's services: the server, the fine-tuning worker and the CLI open everything here.

`open_store(settings)` is the database of those settings, migrated (the CLI's database commands, the worker, the
server). `build_runtime(settings)` is everything one server process contains, each part a few obvious lines: the model
registry, tenancy, one blob store and one response store shared by the API and the batch runner, training's
fine-tuned models, the worker beside the server and the batch runner. `build_worker(settings)` is one fine-tuning
worker. Not here: running them (`server.run`, `training.worker.run`) and handling requests (`api/`).

The server's parts are imported inside `build_runtime` and `build_worker`, so `llmaas keys …` opens a database
without loading torch or FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmaas.config import Settings
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store

if TYPE_CHECKING:
    from fastapi import FastAPI

    from llmaas.api.app import Component
    from llmaas.api.serving.responses import ResponseStore
    from llmaas.engine.protocol import Models
    from llmaas.tenancy.types import AuthBackend, Meter
    from llmaas.training.registry import FineTunedModels
    from llmaas.training.worker import Worker


def open_store(settings: Settings, *, upgrade: bool = True) -> Store:
    """The Store of these settings, migrated to the latest revision unless `upgrade=False`."""
    store = Store.from_settings(settings)
    if upgrade:
        store.upgrade()
    return store


@dataclass
class Runtime:
    """Everything `create_app` receives, plus lines to print once at start (never logged)."""

    settings: Settings
    models: Models  # llmaas.engine.registry.ModelRegistry
    meter: Meter | None = None
    auth: AuthBackend | None = None
    store: Store | None = None
    blobs: BlobStore | None = None
    responses: ResponseStore | None = None
    finetuned: FineTunedModels | None = None
    components: list[Component] = field(default_factory=list)  # start()/close() in the app's lifespan
    notices: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        from llmaas.api.app import create_app

        return create_app(
            self.settings,
            self.models,
            meter=self.meter,
            auth=self.auth,
            store=self.store,
            blobs=self.blobs,
            responses=self.responses,
            finetuned=self.finetuned,
            components=self.components,
        )


def build_runtime(settings: Settings) -> Runtime:
    """The parts of one server process, built from settings (models load in the app's lifespan)."""
    from llmaas.api.serving.responses import ResponseStore
    from llmaas.batches.runner import BatchRunner
    from llmaas.engine.registry import ModelRegistry
    from llmaas.tenancy.runtime import Tenancy
    from llmaas.training.registry import FineTunedModels
    from llmaas.training.spawn import WorkerProcess

    rt = Runtime(settings=settings, models=ModelRegistry.from_settings(settings))

    # --- the database and the blob store: one of each, shared by every part below
    rt.store = open_store(settings)
    rt.blobs = BlobStore.from_settings(settings)
    rt.responses = ResponseStore(rt.store, settings.responses_retention_days)

    # --- tenancy: API keys, rate limits, usage metering
    tenancy = Tenancy.from_settings(settings, store=rt.store, upgrade=False)
    rt.auth, rt.meter = tenancy.auth, tenancy.meter
    rt.components.append(tenancy)
    if tenancy.bootstrap_key:
        rt.notices.append(f"llmaas: first admin API key (shown once, store it now): {tenancy.bootstrap_key}")

    # --- training: fine-tuned models (in /v1/models, served by adapter id) and one worker beside the server
    rt.finetuned = FineTunedModels.from_settings(settings, rt.store, rt.blobs)
    if settings.start_worker:  # a child process: training never runs in this event loop
        rt.components.append(WorkerProcess(settings))

    # --- batches: the Batch API's lines run in this process, at batch priority, under a lease in the database
    if settings.batch_runner:
        rt.components.append(
            BatchRunner(settings, rt.store, rt.models, tenancy.meter, rt.finetuned, rt.blobs, rt.responses)
        )

    if settings.auth and rt.auth is None:  # never serve openly because a part is missing
        raise RuntimeError("auth is on but no authenticator was built; refusing to start (use --no-auth for local use)")
    return rt


def build_worker(settings: Settings) -> Worker:
    """One fine-tuning worker (`llmaas worker`, or the child `llmaas serve` starts) on these settings' database."""
    from llmaas.training.worker import Worker

    return Worker(settings, open_store(settings), BlobStore.from_settings(settings))
