"""Real servers for end-to-end tests: `llmaas serve` as a subprocess on a free port, met the way users meet it.

`serve_llmaas(config, *flags, auth=False)` (a session fixture returning a factory) writes `config` (settings as a
dict) to a YAML file, starts `llmaas serve --config FILE --host 127.0.0.1 --port 0`, reads the address it prints,
polls /health, and fails fast with the process's output if it dies. The data dir is a fresh tmp dir unless
`config` names one. With `auth=True` the server's printed bootstrap admin key is `server.api_key`. Servers are
stopped by `server.stop()` (module fixtures do it) or at the end of the session at the latest.

`tiny_server` is the module-scoped server most e2e tests use: the tiny random Llama as chat model `tiny` plus the
default embedding model, auth off.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import yaml

from llmaas.config import DEFAULT_EMBEDDING_NAME, DEFAULT_EMBEDDING_SOURCE

LISTENING = re.compile(r"listening on (http://\S+?) ")
ADMIN_KEY = re.compile(r"admin API key .*?: (sk-\S+)")
START_TIMEOUT_S = float(os.environ.get("LLMAAS_E2E_START_TIMEOUT", "300"))


class LlmaasServer:
    """One `llmaas serve` process and what it printed."""

    def __init__(self, args: list[str], env: dict[str, str], data_dir: Path) -> None:
        self.args, self.data_dir = args, data_dir
        self.url: str | None = None
        self.api_key: str | None = None
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-200:])

    @property
    def base_url(self) -> str:
        """The OpenAI base_url (…/v1)."""
        return f"{self.url}/v1"

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the reader drain the last lines
                pytest.fail(f"llmaas serve exited with {self.proc.returncode}:\n{self.output}")
            if self.url is None:
                for line in list(self.lines):
                    if m := LISTENING.search(line):
                        self.url = m.group(1)
            for line in list(self.lines):
                if m := ADMIN_KEY.search(line):
                    self.api_key = m.group(1)
            if self.url is not None:
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"llmaas serve was not healthy after {timeout:.0f} s:\n{self.output}")

    def healthy(self) -> bool:
        try:
            return self.proc.poll() is None and httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def serve_llmaas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., LlmaasServer]]:
    started: list[LlmaasServer] = []

    def start(config: dict[str, Any] | None = None, *flags: str, auth: bool = False, env: dict[str, str] | None = None) -> LlmaasServer:
        root = tmp_path_factory.mktemp("llmaas-serve")
        config = dict(config or {})
        config.setdefault("data_dir", str(root / "data"))
        config_file = root / "llmaas.yaml"
        config_file.write_text(yaml.safe_dump(config))
        args = [sys.executable, "-m", "llmaas", "serve", "--config", str(config_file), "--host", "127.0.0.1", "--port", "0", "--no-worker"]
        if not auth:
            args.append("--no-auth")
        args += list(flags)
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        server = LlmaasServer(args, full_env, Path(config["data_dir"]))
        started.append(server)
        server.wait_ready()
        if auth and server.api_key is None:
            server.stop()
            pytest.fail(f"auth is on but the server printed no admin key:\n{server.output}")
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
            "models": [{**spec, **(chat or {})}, {"name": DEFAULT_EMBEDDING_NAME, "source": DEFAULT_EMBEDDING_SOURCE, "kind": "embedding"}],
            **settings,
        }

    return make


@pytest.fixture(scope="module")
def tiny_server(serve_llmaas: Callable[..., LlmaasServer], tiny_config: Callable[..., dict[str, Any]]) -> Iterator[LlmaasServer]:
    server = serve_llmaas(tiny_config(default_max_tokens=32, limits={"max_body_bytes": 64 * 1024}))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai_client(tiny_server: LlmaasServer) -> Any:
    import openai

    return openai.OpenAI(base_url=tiny_server.base_url, api_key=tiny_server.api_key or "none", max_retries=0, timeout=120)
