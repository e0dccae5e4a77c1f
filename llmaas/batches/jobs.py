"""The batch lifecycle: one ordered enum, one transition map, and every database change of a batch and its lines.

validating → in_progress → finalizing → completed | expired, with failed (validation, or the batch can no longer
run) and cancelling → cancelled from any unfinished status; anything after CANCELLING is finished. A status only
changes through `transition()`, a conditional UPDATE that checks the map.

Exactly once: a server runs a batch's lines only while it holds the batch's lease (`claim()` / `heartbeat()`,
optimistic on `version`, as fine-tuning jobs are claimed). A finished line is recorded by `record_line()` in one
transaction — its output line, the batch's counts, its usage row and its budget settlement — and only if the line is
still pending *and* the lease is still ours, so a line whose server died before that commit is simply run again by
the next holder, and a server that lost its lease cannot record anything. The output and error files are assembled
from the recorded rows when the batch finalizes (`finalize()`), in input order, each line once.
The queries themselves are `llmaas.store.batches`' (reads such as `get_batch` and `pending_lines` are called there
directly); this module decides which statuses they run with.
"""

from __future__ import annotations

import enum
import io
import json
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from llmaas.batches.input import InputLine
from llmaas.errors import Conflict
from llmaas.ids import line_id
from llmaas.store import batches as batches_db
from llmaas.store import files as files_db
from llmaas.store.batches import Batch
from llmaas.store.blobs import BlobStore
from llmaas.store.db import now
from llmaas.store.query import move_status

COMPLETION_WINDOWS = {"24h": 24 * 3600}
OUTPUT_PURPOSE = "batch_output"


class BatchStatus(enum.IntEnum):
    VALIDATING = 0
    IN_PROGRESS = 1
    FINALIZING = 2
    CANCELLING = 3
    COMPLETED = 4
    FAILED = 5
    EXPIRED = 6
    CANCELLED = 7

    @property
    def finished(self) -> bool:
        return self > BatchStatus.CANCELLING

    @property
    def api(self) -> str:
        return self.name.lower()

    @classmethod
    def of(cls, value: str) -> BatchStatus:
        return cls[value.upper()]


S = BatchStatus
# The one transition map: status → the statuses it may move to.
TRANSITIONS: dict[BatchStatus, frozenset[BatchStatus]] = {
    S.VALIDATING: frozenset({S.IN_PROGRESS, S.FAILED, S.CANCELLING}),
    S.IN_PROGRESS: frozenset({S.FINALIZING, S.FAILED, S.CANCELLING}),
    S.FINALIZING: frozenset({S.COMPLETED, S.EXPIRED, S.FAILED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}
ACTIVE = [s.api for s in BatchStatus if not s.finished]
RECORDING = [S.IN_PROGRESS.api, S.CANCELLING.api]  # a finished line may still be recorded in these
# The timestamp each status sets when entered.
STAMPS = {
    S.IN_PROGRESS: "in_progress_at",
    S.FINALIZING: "finalizing_at",
    S.COMPLETED: "completed_at",
    S.FAILED: "failed_at",
    S.EXPIRED: "expired_at",
    S.CANCELLING: "cancelling_at",
    S.CANCELLED: "cancelled_at",
}


def transition(
    session: Session, batch_id: str, to: BatchStatus, *, worker_id: str | None = None, **fields: Any
) -> bool:
    """Move a batch to `to` if the map allows it from its current status (and `worker_id` holds it). True if moved."""
    sources = [s.api for s, targets in TRANSITIONS.items() if to in targets]
    values: dict[str, Any] = {"status": to.api, **fields}
    if to in STAMPS:
        values.setdefault(STAMPS[to], now())
    if to.finished:
        values["lease_until"] = None
    return move_status(session, Batch, batch_id, sources=sources, worker_id=worker_id, values=values)


# --- batches as clients see them -------------------------------------------------------------------------


def create_batch(
    session: Session,
    *,
    project_id: str,
    key_id: str | None,
    endpoint: str,
    input_file_id: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    lines: list[InputLine] | None,
    error: dict[str, Any] | None,
) -> Batch:
    """A new batch with its lines (status validating), or — when the input file is invalid — failed with `error`."""
    t = now()
    failed: dict[str, Any] = {}
    if error is not None:
        failed = {"status": S.FAILED.api, "failed_at": t, "errors": {"object": "list", "data": [error]}}
    return batches_db.insert_batch(
        session,
        project_id=project_id,
        key_id=key_id,
        endpoint=endpoint,
        model=lines[0].body["model"][:512] if lines else "",
        input_file_id=input_file_id,
        completion_window=completion_window,
        metadata=metadata,
        created_at=t,
        expires_at=t + COMPLETION_WINDOWS[completion_window],
        lines=[(line.custom_id, line.body) for line in lines or []],
        **{"status": S.VALIDATING.api, **failed},
    )


def cancel_batch(session: Session, batch_id: str, *, project_id: str) -> Batch:
    """Ask a batch to stop: cancelling now, cancelled once its runner has written the partial output."""
    batch = batches_db.get_batch(session, batch_id, project_id=project_id)
    if not transition(session, batch.id, S.CANCELLING) and BatchStatus.of(batch.status) != S.CANCELLING:
        session.refresh(batch)
        if BatchStatus.of(batch.status) not in (S.CANCELLING, S.CANCELLED):
            raise Conflict(f"Cannot cancel a batch with status {batch.status}.", param="batch_id")
    session.refresh(batch)
    return batch


# --- the runner's lease ----------------------------------------------------------------------------------


def claim(session: Session, *, worker_id: str, lease_s: float) -> Batch | None:
    """Take the oldest unfinished batch whose lease is free or expired, or None (commits)."""
    for _ in range(8):
        t = time.time()
        batch = batches_db.next_claimable(session, statuses=ACTIVE, t=t)
        if batch is None:
            return None
        taken = batches_db.take_lease(session, batch, worker_id=worker_id, until=t + lease_s)
        session.commit()
        if taken:
            session.refresh(batch)
            return batch
    return None


def heartbeat(session: Session, batch_id: str, *, worker_id: str, lease_s: float) -> Batch | None:
    """Extend the lease; the batch as it is now (status, window), or None when it is no longer ours."""
    return batches_db.extend_lease(session, batch_id, worker_id=worker_id, statuses=ACTIVE, until=time.time() + lease_s)


# --- lines -----------------------------------------------------------------------------------------------


def record_line(
    session: Session,
    batch_id: str,
    line: int,
    *,
    worker_id: str,
    result: dict[str, Any],
    failed: bool,
    usage: dict[str, Any] | None = None,
    budget: tuple[list[str], str, int] | None = None,
) -> bool:
    """Record one finished line, exactly once (`store.batches.record_line`), while the batch may still record lines
    (in progress or cancelling). False (nothing changed) otherwise."""
    return batches_db.record_line(
        session,
        batch_id,
        line,
        worker_id=worker_id,
        statuses=RECORDING,
        result=result,
        failed=failed,
        usage=usage,
        budget=budget,
    )


def fail_pending(session: Session, batch: Batch, *, worker_id: str, code: str, message: str) -> int:
    """Every line still pending becomes a failed line with `error` {code, message} (expiry); the number failed."""
    count = 0
    for row in batches_db.line_bodies(session, batch.id, batches_db.pending_lines(session, batch.id)):
        result = {
            "id": line_id(),
            "custom_id": row.custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
        count += record_line(session, batch.id, row.line, worker_id=worker_id, result=result, failed=True)
    return count


# --- finalizing ------------------------------------------------------------------------------------------


def _jsonl(rows: Iterator[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows))


def finalize(session: Session, blobs: BlobStore, batch: Batch, *, worker_id: str, to: BatchStatus) -> bool:
    """Move the batch to `to`, then write the output and error files from the recorded lines (input order).

    The status changes first, in the same transaction: from then on no `record_line` can commit a line for this
    batch (it requires a recording status), so the files hold exactly the lines the counts count (a line finishing
    while a cancelled batch finalizes is not recorded, and stays out of both). The file records and the status
    change commit together; a crash before that commit leaves at most an unreferenced blob, and the next holder
    finalizes again."""
    if not transition(session, batch.id, to, worker_id=worker_id):
        session.rollback()
        return False
    done = batches_db.finished_lines(session, batch.id)
    ids: dict[str, str] = {}
    for column, status in (("output_file_id", "completed"), ("error_file_id", "failed")):
        rows = [r.result for r in done if r.status == status and r.result is not None]
        if rows:
            record = files_db.create_file(
                session,
                blobs,
                _jsonl(iter(rows)),
                project_id=batch.project_id,
                purpose=OUTPUT_PURPOSE,
                filename=f"{batch.id}_{column.split('_')[0]}.jsonl",
            )
            ids[column] = record.id
    batches_db.set_files(session, batch.id, **ids)
    return True
