"""The batch runner: a component of the API server that claims batches from the database and runs their lines.

Where batches run, and why here: inside each API server process (not the fine-tuning worker). A line must run
through the same serving code and the same engine as interactive requests, at a lower priority, so that the
scheduler can give it only the capacity interactive requests leave free; the worker process has no engine (a second
one there would compete with interactive traffic for the same cores instead of yielding to it). Several replicas
share the work through a lease in the database: a server holds one batch at a time (`jobs.claim`, renewed by a
heartbeat every third of `batch_lease_s`), and only the lease holder can record a line (`jobs.record_line` checks it
in the line's own transaction). A server killed with kill -9 stops renewing; when its lease expires the next claim
(another replica, or the same server restarted) resumes the batch with its pending lines: the lines it had in
flight were never recorded, so they run again, and none runs twice in the output.

Each line is one `execute()` of api/serving/batch_lines.py with `Call.priority = BATCH`, a `LineMeter` (budgets and
the batch rate limit; its usage row is written with the line), and at most `batch_concurrency` lines in flight, so
the engine's waiting queue stays free for interactive requests. Lines refused for now (full queue, rate limit, a
restarting model) wait and run again. A cancel stops new lines, aborts those in flight and writes what finished;
past `expires_at` the pending lines fail with `batch_expired` and the batch ends `expired` with partial output.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from llmaas import metrics
from llmaas.api.deps import Call
from llmaas.api.serving.batch_lines import RETRY, execute
from llmaas.api.serving.responses import ResponseStore
from llmaas.batches import jobs as J
from llmaas.batches.jobs import BatchStatus as S
from llmaas.engine.types import BATCH
from llmaas.errors import NotFound
from llmaas.ids import line_id, new_id
from llmaas.store import batches as batches_db
from llmaas.store import tenancy as tenancy_db
from llmaas.store.batches import Batch, BatchLine
from llmaas.store.blobs import BlobStore
from llmaas.store.db import Store, now
from llmaas.tenancy.batch_meter import BatchMeter, LineMeter
from llmaas.tenancy.types import Principal

log = logging.getLogger("llmaas.batches")

CHUNK = 64  # line bodies read from the database at a time
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
REVOKED_MESSAGE = "The API key that created this batch was revoked or expired."


class _Run:
    """One claimed batch: why to stop, and the lines in flight."""

    def __init__(self, batch: Batch, principal: Principal | None) -> None:
        self.batch, self.principal = batch, principal
        self.status = S.of(batch.status)
        self.lost = False
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def stop(self) -> bool:
        return (
            self.lost or self.principal is None or self.status != S.IN_PROGRESS or time.time() >= self.batch.expires_at
        )


class BatchRunner:
    def __init__(
        self,
        settings: Any,
        store: Store,
        models: Any,
        meter: Any,
        finetuned: Any,
        blobs: BlobStore,
        responses: ResponseStore,
    ) -> None:
        """Built by `services.build_runtime`, with the blob and response stores the API uses."""
        self.settings, self.store, self.models, self.finetuned = settings, store, models, finetuned
        self.blobs, self.responses = blobs, responses
        self.meter = BatchMeter(
            meter if hasattr(meter, "directory") else None, rpm=settings.batch_rpm, tpm=settings.batch_tpm
        )
        self.worker_id = f"{socket.gethostname()[:24]}-{os.getpid()}-{new_id('b')[-6:]}"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._run: _Run | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="llmaas-batch-runner")

    async def close(self) -> None:
        """Stop: lines in flight are aborted (they stay pending) and the batch is handed back at once."""
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _db(self, fn: Any, *args: Any, **kw: Any) -> Any:
        def work() -> Any:
            with self.store.session() as s:
                return fn(s, *args, **kw)

        return await asyncio.to_thread(work)

    async def _loop(self) -> None:
        log.info("batch runner %s started", self.worker_id)
        while not self._stopping:
            try:
                batch = await self._db(J.claim, worker_id=self.worker_id, lease_s=self.settings.batch_lease_s)
            except Exception:  # the database may be restarting
                log.warning("claiming a batch failed", exc_info=True)
                batch = None
            if batch is None:
                await asyncio.sleep(self.settings.batch_poll_s)
                continue
            finished = False
            try:
                finished = await self._run_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("running batch %s failed; it is handed back", batch.id)
            finally:
                await self._hand_back(batch)  # unfinished (stopping, a failure): claimable again at once
            if not finished:
                await asyncio.sleep(self.settings.batch_poll_s)  # never a hot loop over a batch that cannot finish

    async def _hand_back(self, batch: Batch) -> None:
        try:
            await asyncio.shield(self._db(batches_db.release, batch.id, worker_id=self.worker_id))
        except Exception:
            log.warning("handing batch %s back failed (its lease will expire)", batch.id, exc_info=True)

    # --- one batch -------------------------------------------------------------------------------------

    async def _run_batch(self, batch: Batch) -> bool:
        """Run a claimed batch's pending lines and end it if nothing is left; whether it ended."""
        log.info("batch runner %s claimed %s (%s)", self.worker_id, batch.id, batch.status)
        if batch.status == S.VALIDATING.api:
            await self._db(J.transition, batch.id, S.IN_PROGRESS, worker_id=self.worker_id)
            batch = await self._db(lambda s: batches_db.by_id(s, batch.id))
        run = _Run(batch, await self._db(principal_of, batch))
        heart = asyncio.ensure_future(self._heartbeat(run))
        try:
            if run.status == S.IN_PROGRESS and run.principal is not None:
                await self._run_lines(run)
        finally:
            heart.cancel()
            for task in run.tasks:
                task.cancel()
            await asyncio.gather(*run.tasks, return_exceptions=True)
        return not run.lost and await self._finish(run)

    async def _heartbeat(self, run: _Run) -> None:
        while True:
            await asyncio.sleep(self.settings.batch_lease_s / 3)
            try:
                now_ = await self._db(
                    J.heartbeat, run.batch.id, worker_id=self.worker_id, lease_s=self.settings.batch_lease_s
                )
            except Exception:  # a database hiccup: the lease outlives a few misses
                log.warning("batch heartbeat failed for %s", run.batch.id, exc_info=True)
                continue
            if now_ is None:
                run.lost = True
                return
            run.status, run.batch.expires_at = S.of(now_.status), now_.expires_at
            if await self._db(principal_of, run.batch) is None:  # its key was revoked or expired meanwhile
                run.principal = None
            if run.stop:  # cancelled, expired or revoked: abort the lines in flight now, not when they finish
                for task in list(run.tasks):
                    task.cancel()

    async def _run_lines(self, run: _Run) -> None:
        slots = asyncio.Semaphore(self.settings.batch_concurrency)
        pending = await self._db(batches_db.pending_lines, run.batch.id)
        for start in range(0, len(pending), CHUNK):
            rows = await self._db(batches_db.line_bodies, run.batch.id, pending[start : start + CHUNK])
            for row in rows:
                await slots.acquire()
                if run.stop:
                    slots.release()
                    return
                task = asyncio.ensure_future(self._line(run, row))
                run.tasks.add(task)

                def done(t: asyncio.Task[None]) -> None:
                    run.tasks.discard(t)
                    slots.release()

                task.add_done_callback(done)
        while run.tasks and not run.stop:
            await asyncio.wait(set(run.tasks), timeout=1.0)

    async def _line(self, run: _Run, row: BatchLine) -> None:
        metrics.BATCH_LINES_RUNNING.inc()
        try:
            while not run.stop:
                meter = self.meter.line()
                call = Call(run.principal, self.settings, self.models, meter, self.finetuned, priority=BATCH)  # type: ignore[arg-type]
                try:
                    status, body = await execute(run.batch.endpoint, row.body, call, self.responses)
                except RETRY as exc:
                    await self._refund(meter)
                    await asyncio.sleep(max(1.0, float(exc.retry_after or 1.0)))
                    continue
                except asyncio.CancelledError:
                    await asyncio.shield(self._refund(meter))
                    raise
                await self._record(run, row, meter, status, body)
                return
        except asyncio.CancelledError:
            raise
        except Exception:  # the line stays pending: the next claim runs it again
            log.exception("batch %s line %d could not be recorded", run.batch.id, row.line)
        finally:
            metrics.BATCH_LINES_RUNNING.dec()

    async def _refund(self, meter: LineMeter) -> None:
        for settlement in meter.settlements:
            await self.meter.refund(settlement)

    async def _record(self, run: _Run, row: BatchLine, meter: LineMeter, status: int, body: dict[str, Any]) -> None:
        settlement = meter.settlements[-1] if meter.settlements else None
        request_id = settlement.usage["request_id"] if settlement else new_id("req")
        result = {
            "id": line_id(),
            "custom_id": row.custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }
        failed = status != 200
        recorded = await self._db(
            J.record_line,
            run.batch.id,
            row.line,
            worker_id=self.worker_id,
            result=result,
            failed=failed,
            usage=settlement.usage if settlement else None,
            budget=settlement.budget() if settlement else None,
        )
        if recorded:
            metrics.BATCH_LINES_DONE.labels("failed" if failed else "completed").inc()
        else:  # the lease is gone: whoever holds it runs this line again, and bills it then
            run.lost = True
            await self._refund(meter)

    async def _finish(self, run: _Run) -> bool:
        """Write the output files and end the batch: cancelled, expired, failed (key gone) or completed; whether it
        ended (not when lines are still pending: the next claim goes on)."""
        batch_id, me = run.batch.id, self.worker_id
        status = S.of(await self._db(lambda s: batches_db.by_id(s, batch_id).status))
        if status == S.CANCELLING:
            return bool(
                await self._db(
                    lambda s: J.finalize(s, self.blobs, batches_db.by_id(s, batch_id), worker_id=me, to=S.CANCELLED)
                )
            )
        if status == S.IN_PROGRESS:
            pending = await self._db(batches_db.pending_lines, batch_id)
            if pending and time.time() >= run.batch.expires_at:
                await self._db(
                    lambda s: J.fail_pending(
                        s, batches_db.by_id(s, batch_id), worker_id=me, code="batch_expired", message=EXPIRED_MESSAGE
                    )
                )
                await self._db(J.transition, batch_id, S.FINALIZING, worker_id=me, expired_at=now())
            elif pending and run.principal is None:
                await self._db(
                    lambda s: J.fail_pending(
                        s, batches_db.by_id(s, batch_id), worker_id=me, code="invalid_api_key", message=REVOKED_MESSAGE
                    )
                )
                errors = {"object": "list", "data": [{"code": "invalid_api_key", "message": REVOKED_MESSAGE}]}
                await self._db(J.transition, batch_id, S.FINALIZING, worker_id=me, errors=errors)
            elif pending:
                log.warning("batch %s still has pending lines; handed back", batch_id)
                return False
            else:
                await self._db(J.transition, batch_id, S.FINALIZING, worker_id=me)
            status = S.of(await self._db(lambda s: batches_db.by_id(s, batch_id).status))
        if status == S.FINALIZING:
            b = await self._db(lambda s: batches_db.by_id(s, batch_id))
            to = S.EXPIRED if b.expired_at else S.FAILED if b.errors else S.COMPLETED
            done = await self._db(
                lambda s: J.finalize(s, self.blobs, batches_db.by_id(s, batch_id), worker_id=me, to=to)
            )
            log.info("batch %s %s", batch_id, to.api)
            return bool(done)
        return False


def principal_of(session: Any, batch: Batch) -> Principal | None:
    """Who the lines run as: the key that created the batch, as it is now (None once revoked or expired)."""
    if batch.key_id is None:  # created without auth (--no-auth)
        return Principal(project_id=batch.project_id, is_admin=True)
    try:
        key = tenancy_db.get_key(session, key_id=batch.key_id, project_id=batch.project_id)
    except NotFound:  # deleted, or never this project's
        return None
    if key.revoked_at is not None:
        return None
    if key.expires_at is not None and now() >= key.expires_at:
        return None
    models = frozenset(key.models) if key.models is not None else None
    return Principal(
        project_id=key.project_id,
        key_id=key.id,
        is_admin=bool(key.is_admin),
        allowed_models=models,
        key_prefix=key.prefix,
    )
