"""`AsyncEngine`: an EngineCore stepped by a thread of this process, behind `frontend.py`'s `EngineFrontend`; and
`run_steps`, the step loop wherever it runs (here, or in `process.py`'s child process, so that HTTP, tokenization and
SSE never take the GIL from the step loop).

It knows nothing of HTTP, tenants or chat templates.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from llmaas.engine.core import EngineCore
from llmaas.engine.frontend import EngineFrontend
from llmaas.engine.types import EngineRequest, EngineStats, TokenEvent
from llmaas.errors import InvalidRequest

log = logging.getLogger(__name__)


class AsyncEngine(EngineFrontend):
    """An EngineCore stepped by one thread of this process; each step's TokenEvents come back to the event loop with
    one `call_soon_threadsafe`."""

    def __init__(
        self, core: EngineCore, *, model_name: str, tokenizer: Any, max_model_len: int, max_waiting: int
    ) -> None:
        super().__init__(
            model_name=model_name, tokenizer=tokenizer, max_model_len=max_model_len, max_waiting=max_waiting
        )
        self.core = core
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = False

    # --- lifecycle ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.model_name}", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Stop the step loop; every open stream ends with FinishReason.ABORT."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.to_thread(thread.join, 30.0)
        if not thread.is_alive():
            self._dispatch(self.core.abort_all())

    def _run(self) -> None:
        def send(events: list[TokenEvent]) -> bool:
            if not events:
                return True
            try:
                self._loop.call_soon_threadsafe(self._dispatch, events)  # type: ignore[union-attr]
                return True
            except RuntimeError:  # the event loop is gone: nobody is listening any more
                return False

        run_steps(self.core, send, self._wake, lambda: self._stopping)

    # --- EngineFrontend ----------------------------------------------------------------------------------

    def _accepting(self) -> bool:
        return self._thread is not None and not self._stopping

    def _num_waiting(self) -> int:
        return self.core.num_waiting()

    def _submit(self, request: EngineRequest) -> None:
        self.core.add_request(request)
        self._wake.set()

    def _cancel(self, request_id: str) -> None:
        self.core.abort_request(request_id)
        self._wake.set()

    def register_adapter(self, adapter_id: str, path: Path) -> None:
        if self.core.lora_manager is None:
            raise InvalidRequest("This model does not serve adapters.")
        self.core.lora_manager.register(adapter_id, path)

    def stats(self) -> EngineStats:
        return self.core.stats()


def run_steps(core: EngineCore, send: Any, wake: threading.Event, stopping: Any) -> None:
    """The step loop, wherever it runs: step while there is work, hand each step's events (maybe none) to `send`
    (False: nobody listens, stop), sleep on `wake` while idle. A fault of the step itself fails what is in flight, not the loop."""
    while not stopping():
        if not core.has_work():
            wake.wait(0.5)
            wake.clear()
            continue
        try:
            events = core.step()
        except Exception:  # a bug in the engine itself: fail what is in flight, keep serving
            log.exception("engine step crashed; failing the requests in flight")
            try:
                events = core.fail_all()
            except Exception:
                log.exception("could not fail the requests in flight")
                events = []
        if not events and not core.stats().last_step_seqs:
            wake.wait(0.005)  # work exists but none could be scheduled this step: do not spin
            wake.clear()
        if not send(events):
            return
