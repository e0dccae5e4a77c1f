"""One server process: `build_runtime(settings)` wires the parts, `run(settings)` serves them with uvicorn.

`build_runtime` is the one place that decides what a process contains (model registry, tenancy, training's
fine-tuned models, …): each part adds a few obvious lines there. `run` binds the socket itself (so `--port 0` works and
the real address is printed before models load), then hands it to uvicorn. Nothing here handles requests.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from llmaas.api.app import Component, create_app
from llmaas.config import Settings
from llmaas.engine.protocol import Models
from llmaas.store.db import Store
from llmaas.tenancy.types import AuthBackend, Meter
from llmaas.training.registry import FineTunedModels


@dataclass
class Runtime:
    """Everything `create_app` receives, plus lines to print once at start (never logged)."""

    settings: Settings
    models: Models  # llmaas.engine.registry.ModelRegistry
    meter: Meter | None = None
    auth: AuthBackend | None = None
    store: Store | None = None
    finetuned: FineTunedModels | None = None
    components: list[Component] = field(default_factory=list)  # start()/close() in the app's lifespan
    notices: list[str] = field(default_factory=list)

    def app(self) -> FastAPI:
        return create_app(
            self.settings,
            self.models,
            meter=self.meter,
            auth=self.auth,
            store=self.store,
            finetuned=self.finetuned,
            components=self.components,
        )


def build_runtime(settings: Settings) -> Runtime:
    """The parts of one server process, built from settings (models load in the app's lifespan or here)."""
    from llmaas.engine.registry import ModelRegistry

    rt = Runtime(settings=settings, models=ModelRegistry.from_settings(settings))

    # --- tenancy: store, API keys, rate limits, usage metering
    from llmaas.tenancy.runtime import Tenancy

    tenancy = Tenancy.from_settings(settings)
    rt.store, rt.auth, rt.meter = tenancy.store, tenancy.auth, tenancy.meter
    rt.components.append(tenancy)
    if tenancy.bootstrap_key:
        rt.notices.append(f"llmaas: first admin API key (shown once, store it now): {tenancy.bootstrap_key}")

    # --- training: fine-tuned models (in /v1/models, served by adapter id) and one worker beside the server
    if rt.store is not None:
        from llmaas.training.registry import FineTunedModels

        rt.finetuned = FineTunedModels.from_settings(settings, rt.store)
        if settings.start_worker:  # a child process: training never runs in this event loop
            from llmaas.training.spawn import WorkerProcess

            rt.components.append(WorkerProcess(settings))

    # --- batches: the Batch API's lines run in this process, at batch priority, under a lease in the database
    if rt.store is not None and settings.batch_runner:
        from llmaas.batches.runner import BatchRunner

        rt.components.append(BatchRunner(settings, rt.store, rt.models, tenancy.meter, rt.finetuned))

    if settings.auth and rt.auth is None:  # never serve openly because a part is missing
        raise RuntimeError("auth is on but no authenticator was built; refusing to start (use --no-auth for local use)")
    return rt


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind now (port 0 = any free port) so the printed address is the real one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Prints where it listens first (stdout), then loads models and starts."""
    import uvicorn

    from llmaas.log import configure_logging, quiet_progress_bars

    configure_logging(settings)  # ops: JSON/plain lines with request ids; uvicorn's loggers go through it
    quiet_progress_bars()  # before any model loads: a first start reads as address, models, admin key
    sock = bind_socket(settings.host, settings.port)
    url = base_url(sock)
    print(f"llmaas: listening on {url} (OpenAI base_url: {url}/v1; loading models…)", flush=True)
    runtime = build_runtime(settings)
    for line in runtime.notices:
        print(line, flush=True)
    config = uvicorn.Config(
        runtime.app(),
        log_level=settings.log_level,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        access_log=False,  # ops' middleware writes the access log
        log_config=None,  # ops: keep the handler configure_logging installed
    )
    server = _draining_server(uvicorn, config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        sys.exit(1)


def _draining_server(uvicorn: Any, config: Any) -> Any:
    """ops: a uvicorn Server that turns readiness 503 the moment SIGTERM/SIGINT arrives. uvicorn then stops accepting,
    lets in-flight requests (streams) finish for up to `timeout_graceful_shutdown`, and only then runs the lifespan
    shutdown (tenancy flushes usage, the registry stops the engines)."""
    from llmaas.api.routes.health import mark_draining

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            mark_draining(config.app)
            super().handle_exit(sig, frame)

    return DrainingServer(config)
