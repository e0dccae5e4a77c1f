"""The usage writer: one record per request, buffered in memory and written in batches off the hot path.

`record()` only appends to a list (no I/O, no await). A background task writes the buffer every
`settings.usage_flush_s` seconds in one bulk INSERT on a worker thread; `close()` (graceful shutdown) writes what is
left. If the database is briefly unreachable the batch is kept and retried (bounded by `max_buffer`).

Durability: records live in memory until their flush, so after `kill -9` (or a power loss) at most the last
`usage_flush_s` seconds of usage are lost; a graceful stop (SIGTERM → close) loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llmaas.store import tenancy as tenancy_db
from llmaas.store.db import Store

log = logging.getLogger("llmaas.usage")


class UsageWriter:
    def __init__(self, store: Store, *, flush_s: float = 1.0, max_buffer: int = 1_000_000) -> None:
        self.store = store
        self.flush_s = flush_s
        self.max_buffer = max_buffer
        self._buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.dropped = 0  # records lost because the buffer overflowed while the database was down

    def record(self, row: dict[str, Any]) -> None:
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1
            return
        self._buffer.append(row)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="llmaas-usage-writer")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    def _write(self, rows: list[dict[str, Any]]) -> None:
        with self.store.session() as s:
            tenancy_db.insert_usage(s, rows)

    async def flush(self) -> int:
        """Write everything buffered so far; on failure keep it for the next try. Returns rows written."""
        async with self._flush_lock:
            rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                await asyncio.to_thread(self._write, rows)
            except Exception:  # noqa: BLE001 - the database may be restarting; never lose the batch silently
                log.exception("usage flush failed; %d records kept for retry", len(rows))
                self._buffer[:0] = rows[: self.max_buffer]
                return 0
            return len(rows)

    def flush_sync(self) -> int:
        """Write the buffer from a thread with no event loop (CLI, atexit)."""
        rows, self._buffer = self._buffer, []
        if rows:
            self._write(rows)
        return len(rows)

    async def close(self) -> None:
        """Stop the timer, then write what is left; a flush already under way finishes first."""
        if self._task is not None:
            async with self._flush_lock:  # cancelling mid-flush would return before its batch is written
                self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
