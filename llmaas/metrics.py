"""Every Prometheus metric of llmaas, defined once here (`llmaas_` prefix, base units: seconds, tokens, ratios).

What this is: the metric vocabulary, the label policy (bounded labels only), what served calls report
(`ServingMetrics`, `count_rejection`) and the scrape-time collector that reads live engine and fine-tuning state.
What it isn't: the HTTP route (`api/routes/metrics.py`) or the code that times requests (`api/middleware.py`), both
of which call into this module. Time to first token and inter-token latency come from the engine core's timestamps
on each TokenEvent, not from clocks read in the API process.

Label policy (SECURITY.md 9): `route` is the route TEMPLATE (`/v1/files/{file_id}`), never the raw path; `model` is a
configured model name, "fine_tuned" for any `ft:` model, "other" for anything a client made up, "none" where a
request named no model; `status` is the numeric HTTP status. No ids, keys or client strings become labels.

Multi-process: prometheus-client picks its value storage when it is first imported. When PROMETHEUS_MULTIPROC_DIR is
set (several server processes), counters and histograms go to mmap files in that folder and `/metrics` aggregates
them; the engine and fine-tuning gauges are read at scrape time from the process that answers the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from llmaas import log as _log

if TYPE_CHECKING:
    from llmaas.engine.types import TokenEvent

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `*_created` timestamp series double the output and no dashboard uses them.
disable_created_metrics()

# Latency buckets in seconds: from a cached health check to a long generation on a CPU.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# --- request metrics (written by the middleware, the error handlers and ServingMetrics) ----------------------------

REQUESTS = Counter(
    "llmaas_requests_total",
    "HTTP requests answered, by route template, model label and status code.",
    ["route", "model", "status"],
)
REQUEST_DURATION = Histogram(
    "llmaas_request_duration_seconds",
    "Time from request start to the last byte of the response (streams included).",
    ["route", "model"],
    buckets=_LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "llmaas_time_to_first_token_seconds",
    "Time from submitting a sequence to the engine to its first generated token.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "llmaas_inter_token_latency_seconds",
    "Time between consecutive generated tokens of one sequence (per token).",
    ["model"],
    buckets=_TOKEN_LATENCY_BUCKETS,
)
PROMPT_TOKENS = Counter("llmaas_prompt_tokens_total", "Prompt tokens processed (settled usage).", ["model"])
COMPLETION_TOKENS = Counter("llmaas_completion_tokens_total", "Completion tokens generated (settled usage).", ["model"])
RATE_LIMIT_REJECTIONS = Counter(
    "llmaas_rate_limit_rejections_total",
    "Requests refused with 429, by reason (the error code: rate_limit_exceeded, insufficient_quota, server_overloaded).",
    ["reason"],
)

BATCH_LINES_RUNNING = Gauge(
    "llmaas_batch_lines_running",
    "Batch API lines in flight in this server (submitted at batch priority, not yet recorded).",
    multiprocess_mode="livesum",
)
BATCH_LINES_DONE = Counter(
    "llmaas_batch_lines_done_total",
    "Batch API lines recorded, by outcome (completed: status 200; failed: any other status or an error).",
    ["outcome"],
)

REJECTION_REASONS = frozenset({"rate_limit_exceeded", "insufficient_quota", "server_overloaded"})

# --- scrape-time metrics (read from the engines and the store when /metrics is asked) ---------------------------

# name -> help; kept as a table so the docs test and the collector agree on the names.
ENGINE_GAUGES: dict[str, str] = {
    "llmaas_engine_waiting_sequences": "Sequences waiting for admission into the running batch.",
    "llmaas_engine_running_sequences": "Sequences in the running batch.",
    "llmaas_kv_cache_usage_ratio": "Fraction of KV-cache blocks in use (0..1).",
    "llmaas_kv_cache_blocks": "KV-cache blocks in the pool (capacity).",
    "llmaas_engine_batch_sequences": "Sequences in the last engine step (batch size per step).",
    "llmaas_engine_batch_tokens": "Tokens in the last engine step (prefill chunks + decodes).",
    "llmaas_engine_loaded_adapters": "LoRA adapters loaded in the engine.",
}
ENGINE_COUNTERS: dict[str, str] = {
    "llmaas_engine_steps_total": "Engine steps executed.",
    "llmaas_prefix_cache_queries_total": "Prompt blocks looked up in the prefix cache.",
    "llmaas_prefix_cache_hits_total": "Prompt blocks found in the prefix cache.",
}
FINE_TUNING_JOBS = "llmaas_fine_tuning_jobs"
BATCH_LINES_QUEUED = "llmaas_batch_lines_queued"
FINE_TUNING_STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")


def metric_names() -> list[str]:
    """Every metric name llmaas exports (counters without the `_total` suffix doubled); used by the docs test."""
    static = [
        "llmaas_requests_total",
        "llmaas_request_duration_seconds",
        "llmaas_time_to_first_token_seconds",
        "llmaas_inter_token_latency_seconds",
        "llmaas_prompt_tokens_total",
        "llmaas_completion_tokens_total",
        "llmaas_rate_limit_rejections_total",
        "llmaas_batch_lines_running",
        "llmaas_batch_lines_done_total",
    ]
    return static + list(ENGINE_GAUGES) + list(ENGINE_COUNTERS) + [FINE_TUNING_JOBS, BATCH_LINES_QUEUED]


# --- label policy --------------------------------------------------------------------------------------------------


def model_label(model: str | None, configured: Iterable[str]) -> str:
    """A bounded label for a model a client named: configured names pass, `ft:` models pool, the rest is "other"."""
    if not model:
        return "none"
    if model in configured:
        return model
    if model.startswith("ft:"):
        return "fine_tuned"
    return "other"


def rejection_reason(code: str | None) -> str:
    return code if code in REJECTION_REASONS else "other"


# --- scrape-time snapshot ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Snapshot:
    """Live state gathered by the /metrics route (async) just before rendering; the collector only formats it."""

    engine_stats: Mapping[str, Any] = field(default_factory=dict)  # model name -> EngineStats
    fine_tuning_jobs: Mapping[str, int] | None = None  # status -> count; None = no training store
    batch_lines_queued: int | None = None  # pending lines of unfinished batches; None = no store


class SnapshotCollector(Collector):
    """Turns one Snapshot into metric families. Engine stats are read duck-typed so a partial EngineStats works."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        gauges = {name: GaugeMetricFamily(name, doc, labels=["model"]) for name, doc in ENGINE_GAUGES.items()}
        counters = {
            name: CounterMetricFamily(name.removesuffix("_total"), doc, labels=["model"])
            for name, doc in ENGINE_COUNTERS.items()
        }
        for model, st in sorted(self.snapshot.engine_stats.items()):
            total = int(getattr(st, "kv_blocks_total", 0) or 0)
            used = int(getattr(st, "kv_blocks_used", 0) or 0)
            values = {
                "llmaas_engine_waiting_sequences": getattr(st, "waiting", 0),
                "llmaas_engine_running_sequences": getattr(st, "running", 0),
                "llmaas_kv_cache_usage_ratio": (used / total) if total else 0.0,
                "llmaas_kv_cache_blocks": total,
                "llmaas_engine_batch_sequences": getattr(st, "last_step_seqs", 0),
                "llmaas_engine_batch_tokens": getattr(st, "last_step_tokens", 0),
                "llmaas_engine_loaded_adapters": getattr(st, "loaded_adapters", 0),
            }
            for name, value in values.items():
                gauges[name].add_metric([model], float(value or 0))
            counters["llmaas_engine_steps_total"].add_metric([model], float(getattr(st, "steps", 0) or 0))
            counters["llmaas_prefix_cache_queries_total"].add_metric(
                [model], float(getattr(st, "prefix_cache_queries", 0) or 0)
            )
            counters["llmaas_prefix_cache_hits_total"].add_metric(
                [model], float(getattr(st, "prefix_cache_hits", 0) or 0)
            )
        yield from gauges.values()
        yield from counters.values()
        if self.snapshot.fine_tuning_jobs is not None:
            jobs = GaugeMetricFamily(FINE_TUNING_JOBS, "Fine-tuning jobs in the store, by status.", labels=["status"])
            counts = dict.fromkeys(FINE_TUNING_STATUSES, 0) | dict(self.snapshot.fine_tuning_jobs)
            for status, n in sorted(counts.items()):
                jobs.add_metric([str(status)], float(n))
            yield jobs
        if self.snapshot.batch_lines_queued is not None:
            queued = GaugeMetricFamily(BATCH_LINES_QUEUED, "Batch API lines not yet run, over every unfinished batch.")
            queued.add_metric([], float(self.snapshot.batch_lines_queued))
            yield queued


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def render(snapshot: Snapshot) -> bytes:
    """The text exposition of every llmaas metric: process-local or aggregated over processes, plus the snapshot."""
    registry = CollectorRegistry()
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        body = generate_latest(REGISTRY)
    return body + generate_latest(_snapshot_registry(snapshot))


def _snapshot_registry(snapshot: Snapshot) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


# --- what served calls report -------------------------------------------------------------------------------------
# Wired once: create_app builds one ServingMetrics and every HTTP call carries it (`api.deps.Call.metrics`); the
# error handlers count 429s (`count_rejection`); the middleware counts requests and their duration.


class ServingMetrics:
    """Tokens settled, time to first token and inter-token latency of the calls an app serves, labelled by the policy
    above. The batch runner's lines are not requests: they carry none, and report nothing here."""

    def __init__(self, configured: Iterable[str]) -> None:
        self.configured = frozenset(configured)

    def usage(self, model: str, *, prompt_tokens: int, completion_tokens: int) -> None:
        label = model_label(model, self.configured)
        PROMPT_TOKENS.labels(label).inc(max(0, prompt_tokens))
        COMPLETION_TOKENS.labels(label).inc(max(0, completion_tokens))

    def token_times(self, model: str, previous: float | None, event: TokenEvent) -> float | None:
        """Observe one event's tokens, from the engine core's own timestamps: time to first token (`previous` None:
        none yet) or the gap since the sequence's previous token, per token. Returns the next call's `previous`."""
        n = len(event.token_ids)
        if not n:
            return previous
        label = model_label(model, self.configured)
        if previous is None:
            TIME_TO_FIRST_TOKEN.labels(label).observe(event.time - event.arrival_time)
        else:
            gap = (event.time - previous) / n
            for _ in range(n):
                INTER_TOKEN_LATENCY.labels(label).observe(gap)
        return event.time


def count_rejection(code: str | None) -> None:
    """A 429 answered, by its error code; marks the request so the middleware does not count it again as "other"."""
    RATE_LIMIT_REJECTIONS.labels(rejection_reason(code)).inc()
    ctx = _log.current()
    if ctx is not None:
        ctx.rate_limited = True
