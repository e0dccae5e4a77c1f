"""Helpers for the ops tests: a bare FastAPI app with only the ops layer (middleware, /health, /ready, /metrics) and fake app state.

The ops pieces are tested on their own here, so they do not wait for the real app; the e2e tests in this folder
exercise them inside `llmaas serve`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from llmaas.api.context import Principal, Reservation
from llmaas.config import ModelSpec, Settings
from llmaas.engine.types import EngineStats, TokenEvent
from llmaas.errors import LlmaasError, RateLimited


@dataclass
class FakeEngine:
    model_name: str = "chat-a"
    max_model_len: int = 128
    submitted: list[Any] = field(default_factory=list)

    async def generate(self, request: Any) -> AsyncIterator[TokenEvent]:
        self.submitted.append(request)
        for i in range(3):
            yield TokenEvent(request_id="r", token_ids=[i], text=str(i), num_output_tokens=i + 1)
        yield TokenEvent(request_id="r", token_ids=[], text="", finished=True, num_output_tokens=3)

    def stats(self) -> EngineStats:
        return EngineStats(waiting=2, running=5, kv_blocks_total=100, kv_blocks_used=25, last_step_seqs=5,
                           last_step_tokens=40, steps=7, prefix_cache_hits=3, prefix_cache_queries=9)


class FakeModels:
    def __init__(self) -> None:
        self.engine = FakeEngine()

    def chat(self, name: str) -> FakeEngine:
        return self.engine

    def list(self) -> list[str]:
        return ["chat-a"]

    def stats(self) -> dict[str, EngineStats]:
        return {"chat-a": self.engine.stats()}

    async def start(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


class FakeMeter:
    def __init__(self) -> None:
        self.settled: list[tuple[int, int]] = []
        self.refuse = False

    async def admit(self, principal: Principal, *, model: str, route: str, request_id: str, tokens: int) -> Reservation:
        if self.refuse:
            raise RateLimited("Rate limit reached", retry_after=1)
        return Reservation(principal, model, tokens, request_id, route)

    async def settle(self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, status: int,
                     latency_s: float) -> None:
        self.settled.append((prompt_tokens, completion_tokens))


def ops_settings(**kw: Any) -> Settings:
    return Settings(models=[ModelSpec(name="chat-a", source="x"), ModelSpec(name="emb-b", source="y", kind="embedding")],
                    **kw)


def build_app(settings: Settings | None = None) -> FastAPI:
    from llmaas.api.middleware import install_middleware
    from llmaas.api.routes import health, metrics

    settings = settings or ops_settings()
    app = FastAPI()
    app.state.settings = settings
    app.state.models = FakeModels()
    app.state.meter = app.state.fake_meter = FakeMeter()  # the middleware wraps .meter; tests poke the fake
    app.state.auth = None
    app.state.store = None
    install_middleware(app, settings)
    app.include_router(health.router)
    app.include_router(metrics.router)

    @app.exception_handler(LlmaasError)
    async def _err(request: Request, exc: LlmaasError) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}},
                            status_code=exc.status)

    @app.post("/v1/things/{thing_id}")
    async def thing(thing_id: str, request: Request) -> StreamingResponse:
        body = await request.json()
        state = request.app.state
        res = await state.meter.admit(Principal("p", key_prefix="sk-abc"), model=body["model"], route="t",
                                      request_id="r", tokens=10)
        engine = state.models.chat(body["model"])

        async def stream() -> AsyncIterator[bytes]:
            n = 0
            try:
                async for ev in engine.generate(object()):
                    n += len(ev.token_ids)
                    yield ev.text.encode()
            finally:
                await state.meter.settle(res, prompt_tokens=4, completion_tokens=n, status=200, latency_s=0.1)

        return StreamingResponse(stream(), media_type="text/plain")

    return app


# --- real servers -------------------------------------------------------------------------------------------------

LISTENING = re.compile(r"listening on (http://\S+?) ")
ADMIN_KEY = re.compile(r"admin API key .*?: (sk-\S+)")
START_TIMEOUT_S = float(os.environ.get("LLMAAS_E2E_START_TIMEOUT", "300"))


class Proc:
    """One `llmaas …` subprocess (its own session, so a test can clean up the whole group) and what it printed."""

    def __init__(self, args: list[str], root: Path, env: dict[str, str] | None = None) -> None:
        self.lines: list[str] = []
        self.url: str | None = None
        self.api_key: str | None = None
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "llmaas", *args], cwd=root, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self.url is None and (m := LISTENING.search(line)):
                self.url = m.group(1)
            if self.api_key is None and (m := ADMIN_KEY.search(line)):
                self.api_key = m.group(1)

    @property
    def output(self) -> str:
        return "\n".join(self.lines[-150:])

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.3)
                raise AssertionError(f"llmaas exited with {self.proc.returncode}:\n{self.output}")
            if self.url is not None:
                try:
                    if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        self.kill()
        raise AssertionError(f"llmaas was not ready after {timeout:.0f} s:\n{self.output}")

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the main process only (as Kubernetes does to PID 1); returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def group_alive(self) -> bool:
        """Whether any process of this one's group (its children: the fine-tuning worker) is still running."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole group, children included (cleanup after a test, also after a failure)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)


def serve(root: Path, config: dict[str, Any], *flags: str, env: dict[str, str] | None = None) -> Proc:
    """Start `llmaas serve` on a free loopback port with `config` as its YAML config file."""
    root.mkdir(parents=True, exist_ok=True)
    config = {"data_dir": str(root / "data"), **config}
    cfg = root / "llmaas.yaml"
    cfg.write_text(yaml.safe_dump(config))
    return Proc(["serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", "0", *flags], root, env)
