"""Helpers for the ops tests: a bare FastAPI app with only the ops layer (middleware, error handlers, /health, /ready,
/metrics), fake app state, and one route that serves a call the way the serving layer does (a `Generation`).

The ops pieces are tested on their own here, so they do not wait for the real app; the e2e tests in this folder
exercise them inside `llmaas serve`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from llmaas.api.deps import Call
from llmaas.api.serving.generation import Generation, Target
from llmaas.config import ModelSpec, Settings
from llmaas.engine.frontend import EngineFrontend
from llmaas.engine.types import EngineRequest, EngineStats, SamplingParams, TokenEvent
from llmaas.errors import RateLimited
from llmaas.metrics import ServingMetrics
from llmaas.tenancy.types import Principal, Reservation


class FakeEngine(EngineFrontend):
    """Three one-token events and a last one, per request; `busy` makes every submit Overloaded."""

    def __init__(self, model_name: str = "chat-a") -> None:
        super().__init__(model_name=model_name, tokenizer=None, max_model_len=128, max_waiting=10)
        self.submitted: list[EngineRequest] = []
        self.busy = False

    def _accepting(self) -> bool:
        return True

    def _num_waiting(self) -> int:
        return self.max_waiting if self.busy else 0

    def _submit(self, request: EngineRequest) -> None:
        self.submitted.append(request)
        asyncio.ensure_future(self._play(request.request_id, time.monotonic()))

    def _cancel(self, request_id: str) -> None:
        pass

    async def _play(self, rid: str, arrival: float) -> None:
        for i in range(3):
            await asyncio.sleep(0)
            self._dispatch(
                [TokenEvent(rid, [i], str(i), num_output_tokens=i + 1, arrival_time=arrival, time=time.monotonic())]
            )
        self._dispatch(
            [TokenEvent(rid, [], "", finished=True, num_output_tokens=3, arrival_time=arrival, time=time.monotonic())]
        )

    def stats(self) -> EngineStats:
        return EngineStats(
            waiting=2,
            running=5,
            kv_blocks_total=100,
            kv_blocks_used=25,
            last_step_seqs=5,
            last_step_tokens=40,
            steps=7,
            prefix_cache_hits=3,
            prefix_cache_queries=9,
        )


class FakeModels:
    def __init__(self) -> None:
        self.engine = FakeEngine()

    def chat(self, name: str) -> FakeEngine:
        return self.engine if name == self.engine.model_name else FakeEngine(name)  # any name serves, as itself

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

    async def settle(
        self, reservation: Reservation, *, prompt_tokens: int, completion_tokens: int, status: int, latency_s: float
    ) -> None:
        self.settled.append((prompt_tokens, completion_tokens))


def ops_settings(**kw: Any) -> Settings:
    return Settings(
        models=[ModelSpec(name="chat-a", source="x"), ModelSpec(name="emb-b", source="y", kind="embedding")], **kw
    )


def build_app(settings: Settings | None = None) -> FastAPI:
    from llmaas.api.errors import install_error_handlers
    from llmaas.api.middleware import install_middleware
    from llmaas.api.routes import health, metrics

    settings = settings or ops_settings()
    app = FastAPI()
    app.state.settings = settings
    app.state.models = FakeModels()
    app.state.meter = app.state.fake_meter = FakeMeter()
    app.state.metrics = ServingMetrics(m.name for m in settings.models)  # as create_app wires it
    app.state.auth = None
    app.state.store = None
    install_error_handlers(app)
    install_middleware(app, settings)
    app.include_router(health.router)
    app.include_router(metrics.router)

    @app.post("/v1/things/{thing_id}")
    async def thing(thing_id: str, request: Request) -> StreamingResponse:
        """A served call as the serving layer makes one: one Generation, streamed."""
        body = await request.json()
        state = request.app.state
        request.state.principal = principal = Principal("p", key_prefix="sk-abc")  # as deps.get_principal does
        call = Call(principal, state.settings, state.models, state.meter, None, metrics=state.metrics)
        target = Target(state.models.chat(body["model"]), body["model"])
        requests = [EngineRequest(f"r-{thing_id}", [1, 2, 3, 4], SamplingParams(max_tokens=3))]
        gen = Generation(target, call, "t", "r", requests, [0], [4])
        first = await gen.start()

        async def stream() -> AsyncIterator[bytes]:
            async for _, ev in gen.events(first):
                yield ev.text.encode()

        return StreamingResponse(stream(), media_type="text/plain")

    return app
