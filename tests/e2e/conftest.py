"""Real servers for end-to-end tests: `llmaas serve` as a subprocess on a free port (tests.support.server).

`serve_llmaas(config, *flags, auth=False, env=None)` (a session fixture returning a factory) serves `config`
(settings as a dict) with --no-worker from a fresh tmp dir and returns once it is ready. With `auth=True` the
server's printed bootstrap admin key is `server.api_key`. Servers are stopped by `server.stop()` (module fixtures do
it) or at the end of the session at the latest.

`tiny_server` is the module-scoped server most e2e tests use: the tiny random Llama as chat model `tiny` plus the
default embedding model, auth off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from llmaas.config import DEFAULT_EMBEDDING_NAME, DEFAULT_EMBEDDING_SOURCE
from tests.support.server import LlmaasProcess, serve


@pytest.fixture(scope="session")
def serve_llmaas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LlmaasProcess]]:
    started: list[LlmaasProcess] = []

    def start(
        config: dict[str, Any] | None = None, *flags: str, auth: bool = False, env: dict[str, str] | None = None
    ) -> LlmaasProcess:
        server = serve(tmp_path_factory.mktemp("llmaas-serve"), config, *flags, auth=auth, worker=False, env=env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def tiny_config(tiny_model_dir: Path) -> Callable[..., dict[str, Any]]:
    """tiny_config(chat={spec overrides}, **settings): serve the tiny model as `tiny` + the default embedding model."""

    def make(chat: dict[str, Any] | None = None, **settings: Any) -> dict[str, Any]:
        spec = {"name": "tiny", "source": str(tiny_model_dir), "kind": "chat", "kv_cache_mb": 16, "max_num_seqs": 16}
        return {
            "models": [
                {**spec, **(chat or {})},
                {"name": DEFAULT_EMBEDDING_NAME, "source": DEFAULT_EMBEDDING_SOURCE, "kind": "embedding"},
            ],
            **settings,
        }

    return make


@pytest.fixture(scope="module")
def tiny_server(
    serve_llmaas: Callable[..., LlmaasProcess], tiny_config: Callable[..., dict[str, Any]]
) -> Iterator[LlmaasProcess]:
    server = serve_llmaas(tiny_config(default_max_tokens=32, limits={"max_body_bytes": 64 * 1024}))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_client(tiny_server: LlmaasProcess) -> Any:
    import openai

    return openai.OpenAI(
        base_url=tiny_server.base_url, api_key=tiny_server.api_key or "none", max_retries=0, timeout=120
    )
