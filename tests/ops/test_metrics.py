"""/metrics: Prometheus format, bounded labels, engine stats read at scrape time, tokens/latency/429s counted."""

from __future__ import annotations

import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from llmaas import metrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metric_names_are_prefixed_and_in_base_units() -> None:
    for name in metrics.metric_names():
        assert name.startswith("llmaas_"), name
        assert not re.search(r"_(ms|milliseconds|minutes|bytes_kb|percent)\b", name), name


def test_model_label_is_bounded() -> None:
    configured = frozenset({"chat-a"})
    assert metrics.model_label("chat-a", configured) == "chat-a"
    assert metrics.model_label("ft:chat-a:p:x:ftjob-1", configured) == "fine_tuned"
    assert metrics.model_label("anything-a-client-invents", configured) == "other"
    assert metrics.model_label(None, configured) == "none"


def test_scrape_reports_engine_stats(client: Any) -> None:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    t = r.text
    assert value(t, "llmaas_engine_waiting_sequences", model="chat-a") == 2
    assert value(t, "llmaas_engine_running_sequences", model="chat-a") == 5
    assert value(t, "llmaas_kv_cache_usage_ratio", model="chat-a") == 0.25
    assert value(t, "llmaas_engine_batch_sequences", model="chat-a") == 5
    assert value(t, "llmaas_engine_steps_total", model="chat-a") == 7
    assert value(t, "llmaas_prefix_cache_hits_total", model="chat-a") == 3


def test_requests_tokens_and_latency_are_counted_by_route_template(client: Any) -> None:
    before = client.get("/metrics").text
    for i in range(2):
        r = client.post(f"/v1/things/raw-id-{i}", json={"model": "chat-a"})
        assert r.status_code == 200 and r.text == "012"
    client.post("/v1/things/x", json={"model": "made-up-by-client"})
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("llmaas_requests_total", route="/v1/things/{thing_id}", model="chat-a", status="200") == 2
    assert delta("llmaas_requests_total", route="/v1/things/{thing_id}", model="other", status="200") == 1
    assert "raw-id-0" not in after and "made-up-by-client" not in after
    assert delta("llmaas_completion_tokens_total", model="chat-a") == 6
    assert delta("llmaas_prompt_tokens_total", model="chat-a") == 8
    assert delta("llmaas_time_to_first_token_seconds_count", model="chat-a") == 2
    assert delta("llmaas_inter_token_latency_seconds_count", model="chat-a") == 4
    assert delta("llmaas_request_duration_seconds_count", route="/v1/things/{thing_id}", model="chat-a") == 2


def test_unmatched_paths_share_one_label(client: Any) -> None:
    client.get("/no/such/path/12345")
    t = client.get("/metrics").text
    assert "/no/such/path" not in t
    assert value(t, "llmaas_requests_total", route="unmatched", model="none", status="404") >= 1


def test_rate_limit_rejections_are_counted(client: Any, app: Any) -> None:
    before = value(client.get("/metrics").text, "llmaas_rate_limit_rejections_total", reason="rate_limit_exceeded")
    app.state.fake_meter.refuse = True
    r = client.post("/v1/things/1", json={"model": "chat-a"})
    assert r.status_code == 429
    after = value(client.get("/metrics").text, "llmaas_rate_limit_rejections_total", reason="rate_limit_exceeded")
    assert after - before == 1


def test_fine_tuning_jobs_gauge_from_snapshot() -> None:
    text = metrics.render(metrics.Snapshot(fine_tuning_jobs={"running": 2, "succeeded": 5})).decode()
    assert value(text, "llmaas_fine_tuning_jobs", status="running") == 2
    assert value(text, "llmaas_fine_tuning_jobs", status="queued") == 0


def test_multiprocess_mode_aggregates(tmp_path: Any) -> None:
    """Two processes writing counters into one PROMETHEUS_MULTIPROC_DIR; a third renders the sum."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    inc = "from llmaas import metrics; metrics.REQUESTS.labels('/v1/x','none','200').inc(3)"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", inc], env=env, check=True, timeout=60)
    show = "from llmaas import metrics; print(metrics.render(metrics.Snapshot()).decode())"
    out = subprocess.run([sys.executable, "-c", show], env=env, check=True, timeout=60, capture_output=True, text=True)
    assert value(out.stdout, "llmaas_requests_total", route="/v1/x", model="none", status="200") == 6


def test_a_refused_submission_is_one_rejection_and_a_dropped_stream_is_closed(client: Any, app: Any) -> None:
    """The engine refuses (Overloaded) when a call is submitted, counted once; a consumer that stops early closes
    the engine's stream (= aborts)."""
    import asyncio

    from ops_helpers import FakeMeter

    from llmaas.api.deps import Call
    from llmaas.api.serving.generation import Generation, Target
    from llmaas.engine.types import EngineRequest, SamplingParams, TokenEvent
    from llmaas.tenancy.types import Principal

    def count(reason: str) -> float:
        return value(client.get("/metrics").text, "llmaas_rate_limit_rejections_total", reason=reason)

    before = count("server_overloaded"), count("other")
    app.state.models.engine.busy = True
    assert client.post("/v1/things/1", json={"model": "chat-a"}).status_code == 429
    assert (count("server_overloaded"), count("other")) == (before[0] + 1, before[1])
    assert app.state.fake_meter.settled[-1] == (0, 0)  # nothing ran: nothing billed

    class Closing:
        model_name = "chat-a"
        closed = False

        def generate(self, requests: Any) -> Any:
            async def stream() -> Any:
                try:
                    for i in range(10):
                        yield TokenEvent("x", [i], str(i), num_output_tokens=i + 1)
                finally:
                    Closing.closed = True

            return stream()

    async def take_one() -> None:
        call = Call(Principal("p"), app.state.settings, app.state.models, FakeMeter(), None)
        request = EngineRequest("x", [1], SamplingParams(max_tokens=10))
        gen = Generation(Target(Closing(), "chat-a"), call, "t", "r", [request], [0], [1])  # type: ignore[arg-type]
        events = gen.events(await gen.start())
        await events.__anext__()
        await events.aclose()  # a client disconnect: the engine's stream must be closed (= aborted)

    asyncio.run(take_one())
    assert Closing.closed
