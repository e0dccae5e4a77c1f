"""EngineProcess: a chat model's EngineCore stepping in a child process of its own (as vLLM v1 runs its core).

In one process the step loop and the event loop share a GIL: every one of a forward's ~1000 op launches can wait
behind HTTP parsing, tokenization, detokenization and SSE framing (measured: the engine alone decoded ~2x faster than
the same engine behind HTTP). Here the API process keeps the tokenizer and the streams (`EngineFrontend`); the child
loads the weights, owns the KV cache and runs `run_steps`. Two one-way pipes join them: requests, aborts and adapter
registrations go down (from a writer thread, so the event loop never blocks on a full pipe); each step's TokenEvents
and EngineStats come up (to a reader thread that hands them to the event loop).

Failure and shutdown: the child ignores SIGINT/SIGTERM (a signal to the process group must not kill it under the
API's graceful drain) and exits when told to stop or when its request pipe closes (the API process died, even by
kill -9). If the child dies, every open stream ends with FinishReason.ERROR and a new child is started, with the
adapters registered so far.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import multiprocessing as mp
import queue
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from llmaas.engine.client import run_steps
from llmaas.engine.core import ERROR_MESSAGE
from llmaas.engine.cpu import release_freed_memory
from llmaas.engine.factory import kv_geometry, serves_adapters
from llmaas.engine.frontend import EngineFrontend
from llmaas.engine.types import EngineRequest, EngineStats, FinishReason, TokenEvent
from llmaas.errors import InvalidRequest

log = logging.getLogger(__name__)

START_TIMEOUT_S = 900.0  # loading a large model from a slow disk
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class EngineProcess(EngineFrontend):
    def __init__(self, spec: Any, loaded: Any, device: torch.device, dtype: torch.dtype, settings: Any) -> None:
        num_blocks, max_len = kv_geometry(spec, loaded.config, dtype)
        super().__init__(
            model_name=spec.name, tokenizer=loaded.tokenizer, max_model_len=max_len, max_waiting=spec.max_waiting
        )
        # The child reads the folder the API process resolved (a GGUF is converted once, here, before it starts).
        self._child_args = (spec.model_copy(update={"source": str(loaded.source_dir)}), str(device), dtype, settings)
        self._adapters_allowed = serves_adapters(spec)
        self._adapters: dict[str, Path] = {}
        self._stats = EngineStats(kv_blocks_total=num_blocks)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: Any = None
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._generation = 0  # bumped per child, so a dead child's reader cannot touch its successor
        self._running = False
        self._stopping = False
        self._sent = self._received = 0  # requests sent down / read by the child: the difference is in the pipe

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        await asyncio.to_thread(self._spawn)

    async def shutdown(self) -> None:
        """Stop the child; every open stream ends with FinishReason.ABORT."""
        proc = self._proc
        if proc is None:
            return
        self._stopping, self._running = True, False
        self._outbox.put(("stop",))
        await asyncio.to_thread(proc.join, 30.0)
        if proc.is_alive():
            log.error("engine process for %r did not stop in 30 s; killing it", self.model_name)
            proc.kill()
            await asyncio.to_thread(proc.join, 5.0)
        await asyncio.sleep(0)  # the child's last events (its aborts), already scheduled by the reader
        self._fail_open_streams(FinishReason.ABORT, None)
        self._proc = None
        self._stats = dataclasses.replace(self._stats, waiting=0, running=0, kv_blocks_used=0)  # nothing runs now

    def _spawn(self) -> None:
        """Start a child and wait until it is ready to step (blocking: run it off the event loop)."""
        ctx = mp.get_context("spawn")  # never fork a process that holds threads and an OpenMP pool
        req_recv, req_send = ctx.Pipe(duplex=False)
        ev_recv, ev_send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=child_main,
            args=(*self._child_args, req_recv, ev_send),
            name=f"llmaas-engine-{self.model_name}",
            daemon=True,
        )
        proc.start()
        req_recv.close()
        ev_send.close()
        waited = 0.0
        while not ev_recv.poll(1.0):
            waited += 1.0
            if not proc.is_alive() or waited > START_TIMEOUT_S:
                proc.kill()
                raise RuntimeError(
                    f"the engine process for model {self.model_name!r} exited while starting "
                    f"(exit code {proc.exitcode}); its log is above"
                )
        kind, info = ev_recv.recv()
        if kind != "ready":
            proc.join(10.0)
            raise RuntimeError(f"the engine process for model {self.model_name!r} failed to start: {info}")
        self._generation += 1
        outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._outbox = outbox
        self._sent = self._received = 0
        for adapter_id, path in self._adapters.items():
            outbox.put(("adapter", adapter_id, str(path)))
        self._proc, self._running = proc, True
        gen = self._generation
        threading.Thread(
            target=self._write, args=(req_send, outbox), name=f"engine-{self.model_name}-send", daemon=True
        ).start()
        threading.Thread(
            target=self._read, args=(ev_recv, gen), name=f"engine-{self.model_name}-recv", daemon=True
        ).start()
        log.info("engine process for %r ready (pid %d)", self.model_name, proc.pid)

    def _write(self, conn: Any, outbox: queue.SimpleQueue[tuple[Any, ...] | None]) -> None:
        try:
            while (msg := outbox.get()) is not None:
                try:
                    conn.send(msg)
                except (OSError, EOFError):  # the child is gone; the reader notices and restarts it
                    raise
                except Exception:  # this one message cannot travel (it does not pickle): fail its request alone
                    log.exception("could not send %r to the engine process of %r", msg[0], self.model_name)
                    if msg[0] == "add":
                        failed = TokenEvent(
                            msg[1].request_id,
                            [],
                            "",
                            finished=True,
                            finish_reason=FinishReason.ERROR,
                            error=ERROR_MESSAGE,
                        )
                        self._loop.call_soon_threadsafe(self._dispatch, [failed])  # type: ignore[union-attr]
        except (OSError, EOFError, RuntimeError):  # child gone, or the event loop closed
            pass
        finally:
            conn.close()

    def _read(self, conn: Any, gen: int) -> None:
        try:
            while True:
                self._loop.call_soon_threadsafe(self._on_step, conn.recv())  # type: ignore[union-attr]
        except (EOFError, OSError):
            pass
        except RuntimeError:  # the event loop is closed: nobody listens any more
            return
        conn.close()
        try:
            self._loop.call_soon_threadsafe(self._on_exit, gen)  # type: ignore[union-attr]
        except RuntimeError:
            pass

    def _on_step(self, msg: tuple[str, list[TokenEvent], EngineStats, int]) -> None:
        _, events, self._stats, self._received = msg
        self._dispatch(events)

    def _on_exit(self, gen: int) -> None:
        if self._stopping or gen != self._generation:
            return
        code = self._proc.exitcode if self._proc is not None else None
        log.error(
            "the engine process for %r died (exit code %s); failing its streams and restarting it",
            self.model_name,
            code,
        )
        self._running = False
        self._outbox.put(None)
        self._fail_open_streams(FinishReason.ERROR, ERROR_MESSAGE)
        asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        for delay in itertools.chain(RESTART_BACKOFF_S, itertools.repeat(RESTART_BACKOFF_S[-1])):
            if self._stopping:
                return
            try:
                await asyncio.to_thread(self._spawn)
                return
            except Exception:
                log.exception("restarting the engine process for %r failed; again in %.0f s", self.model_name, delay)
                await asyncio.sleep(delay)

    def _fail_open_streams(self, reason: FinishReason, error: str | None) -> None:
        self._dispatch(
            [TokenEvent(rid, [], "", finished=True, finish_reason=reason, error=error) for rid in list(self._queues)]
        )

    # --- EngineFrontend ----------------------------------------------------------------------------------

    def _accepting(self) -> bool:
        return self._running and not self._stopping

    def _num_waiting(self) -> int:
        return (self._sent - self._received) + self._stats.waiting

    def _submit(self, request: EngineRequest) -> None:
        grammar = request.params.grammar
        if grammar is not None:  # a compiled grammar does not pickle: it travels as xgrammar's JSON
            request = dataclasses.replace(
                request, params=dataclasses.replace(request.params, grammar=grammar.to_wire())
            )
        self._sent += 1
        self._outbox.put(("add", request))

    def _cancel(self, request_id: str) -> None:
        self._outbox.put(("abort", request_id))

    def register_adapter(self, adapter_id: str, path: Path) -> None:
        if not self._adapters_allowed:
            raise InvalidRequest("This model does not serve adapters.")
        if self._adapters.get(adapter_id) != path:
            self._adapters[adapter_id] = path
            self._outbox.put(("adapter", adapter_id, str(path)))

    def stats(self) -> EngineStats:
        return self._stats


# --- the child -------------------------------------------------------------------------------------------


def child_main(spec: Any, device: str, dtype: torch.dtype, settings: Any, requests: Any, events: Any) -> None:
    """The engine process: load, build the core, then step until told to stop or the API process goes away."""
    from llmaas.engine.factory import build_core
    from llmaas.engine.models.loader import load_model
    from llmaas.log import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the API process drains, then stops us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings)
    try:
        core = build_core(spec, load_model(spec, settings), device, dtype, num_threads=settings.num_threads)
    except Exception as e:
        log.exception("the engine for %r could not be built", spec.name)
        events.send(("failed", f"{type(e).__name__}: {e}"))
        return
    try:
        core.warm_up()
    except Exception:  # a model that cannot serve this prompt fails its own requests, as it would without this
        log.exception("the engine for %r failed its warm-up request", spec.name)
    release_freed_memory()
    events.send(("ready", None))
    wake, stop = threading.Event(), threading.Event()
    received = 0

    def read() -> None:
        nonlocal received
        try:
            while (msg := requests.recv())[0] != "stop":
                if msg[0] == "add":
                    core.add_request(_loaded_grammar(core, msg[1]))
                    received += 1
                elif msg[0] == "abort":
                    core.abort_request(msg[1])
                elif msg[0] == "adapter" and core.lora_manager is not None:
                    core.lora_manager.register(msg[1], Path(msg[2]))
                wake.set()
        except (EOFError, OSError):  # the API process is gone
            pass
        stop.set()
        wake.set()

    def send(batch: list[TokenEvent]) -> bool:
        try:
            events.send(("step", batch, core.stats(), received))
            return True
        except (OSError, EOFError):
            return False

    threading.Thread(target=read, name="engine-requests", daemon=True).start()
    run_steps(core, send, wake, stop.is_set)
    send(core.abort_all())


def _loaded_grammar(core: Any, request: EngineRequest) -> EngineRequest:
    """The request with its grammar (sent as a WireGrammar) loaded for this process; off the step thread. If it
    cannot be loaded, the core refuses the request at admission, as it does any request it cannot admit."""
    from llmaas.engine.structured import WireGrammar, from_wire

    wire = request.params.grammar
    if isinstance(wire, WireGrammar):
        try:
            request.params.grammar = from_wire(core.tokenizer, wire)
        except Exception:
            log.exception("request %s: its grammar could not be loaded", request.request_id)
    return request
