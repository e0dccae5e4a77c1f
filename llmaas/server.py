"""One server process: `run(settings)` serves what `llmaas.services.build_runtime(settings)` built, with uvicorn.

`run` binds the socket itself (so `--port 0` works and the real address is printed before models load), then hands
it to uvicorn. What a process contains is decided in `services.py`; nothing here builds a service or handles requests.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from llmaas.config import Settings
from llmaas.services import build_runtime


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
