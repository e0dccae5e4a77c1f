"""`GET /metrics`: Prometheus text format, public like the probes (scrapers carry no key; no label holds a secret).

What this is: a thin route that gathers the scrape-time snapshot (engine stats, fine-tuning job counts) and renders
it with every registered metric (`llmaas.metrics`). What it isn't: a place that defines metrics.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from llmaas import metrics
from llmaas.batches.jobs import ACTIVE
from llmaas.store import batches as batches_db
from llmaas.store import training as training_db

router = APIRouter(tags=["operations"])

DB_TIMEOUT_S = 2.0


@router.get("/metrics", include_in_schema=False)
async def get_metrics(request: Request) -> Response:
    """Prometheus metrics."""
    state = request.app.state
    snapshot = metrics.Snapshot(
        engine_stats=_engine_stats(getattr(state, "models", None)),
        fine_tuning_jobs=await _job_counts(getattr(state, "store", None)),
        batch_lines_queued=await _queued_lines(getattr(state, "store", None)),
    )
    return Response(metrics.render(snapshot), media_type=metrics.CONTENT_TYPE)


def _engine_stats(models: Any) -> dict[str, Any]:
    if models is None:
        return {}
    try:
        return dict(models.stats())
    except Exception:  # a scrape never fails because one engine cannot report
        return {}


async def _job_counts(store: Any) -> dict[str, int] | None:
    if store is None or getattr(store, "engine", None) is None:
        return None
    try:
        return await asyncio.wait_for(asyncio.to_thread(_count_jobs, store), DB_TIMEOUT_S)
    except Exception:
        return None


def _count_jobs(store: Any) -> dict[str, int] | None:
    with store.session() as s:
        return training_db.count_by_status(s)


async def _queued_lines(store: Any) -> int | None:
    if store is None or getattr(store, "engine", None) is None:
        return None
    try:
        return await asyncio.wait_for(asyncio.to_thread(_count_queued, store), DB_TIMEOUT_S)
    except Exception:
        return None


def _count_queued(store: Any) -> int:
    with store.session() as s:
        return batches_db.queued_lines(s, statuses=ACTIVE)
