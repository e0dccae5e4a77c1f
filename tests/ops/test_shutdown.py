"""Graceful shutdown, for real: `llmaas serve` gets SIGTERM while streams are in flight, and no usage is lost.

The usage writer's flush interval is set to a minute, so every record in the table after the stop was written by the
shutdown flush (lifespan shutdown runs after uvicorn has let the streams finish or cancelled them). Readiness turns
503 (or the port closes) at once; the process exits by itself, and its fine-tuning worker child with it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import serve

STREAMS = 4
MAX_TOKENS = 400  # the tiny model's context is 512: long enough to be mid-stream when SIGTERM arrives


def stream_chat(url: str, key: str, out: dict[str, Any], started: threading.Event) -> None:
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": MAX_TOKENS,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    out["chunks_at"] = []
    try:
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=body, timeout=120, headers={"Authorization": f"Bearer {key}"}
        ) as r:
            out["status"] = r.status_code
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                started.set()
                out["chunks_at"].append(time.monotonic())
                data = line[len("data: ") :]
                if data == "[DONE]":
                    out["done"] = True
                elif (chunk := json.loads(data)).get("usage"):
                    out["usage"] = chunk["usage"]
    except Exception as exc:  # a stream cut by the server; asserted on by the tests
        out["error"] = repr(exc)
    finally:
        started.set()


def sigterm_during_streams(
    tmp_path: Path, model_dir: Path, grace_s: float
) -> tuple[list[dict[str, Any]], float, list[Any], str]:
    """Start a server, open STREAMS streams, SIGTERM once all produce output; return results, SIGTERM time, usage."""
    config = {
        "models": [{"name": "tiny", "source": str(model_dir), "kind": "chat", "kv_cache_mb": 16}],
        "start_worker": True,  # the worker child must stop with the server
        "usage_flush_s": 60,
        "shutdown_grace_s": grace_s,
    }
    server = serve(tmp_path, config, wait=False)
    try:
        server.wait_ready()
        assert server.url and server.api_key, server.output
        results: list[dict[str, Any]] = [{} for _ in range(STREAMS)]
        events = [threading.Event() for _ in range(STREAMS)]
        threads = [
            threading.Thread(target=stream_chat, args=(server.url, server.api_key, results[i], events[i]))
            for i in range(STREAMS)
        ]
        for t in threads:
            t.start()
        for e in events:
            assert e.wait(120), server.output
        t_term = time.monotonic()
        server.proc.send_signal(15)

        # From now on nobody new is admitted: /ready is 503 on a live connection, or the port is closed.
        for _ in range(5):
            try:
                assert httpx.get(f"{server.url}/ready", timeout=5).status_code == 503
            except httpx.TransportError:
                pass
            time.sleep(0.05)

        for t in threads:
            t.join(timeout=120)
        code = server.proc.wait(timeout=120)
        deadline = time.monotonic() + 10
        while server.group_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not server.group_alive(), f"a child (the worker) outlived the server:\n{server.output}"
    finally:
        server.kill()
    assert code in (0, -15), f"exit code {code}:\n{server.output}"

    db = sqlite3.connect(tmp_path / "data" / "llmaas.db")
    rows = db.execute("SELECT route, completion_tokens, status FROM usage_records").fetchall()
    db.close()
    return results, t_term, [row for row in rows if "chat" in row[0]], server.output


def test_sigterm_drains_streams_and_flushes_usage(tmp_path: Path, tiny_model_dir: Path) -> None:
    results, t_term, rows, output = sigterm_during_streams(tmp_path, tiny_model_dir, grace_s=60)
    for r in results:
        assert r.get("status") == 200 and r.get("done"), f"{r.get('error')}\n{output}"
        assert r["usage"]["completion_tokens"] == MAX_TOKENS
    in_flight = sum(1 for r in results if r["chunks_at"][-1] > t_term)
    assert in_flight >= 1, "no stream was still running at SIGTERM: the test proved nothing"
    assert len(rows) == STREAMS, f"usage rows: {rows}"
    assert all(tokens == MAX_TOKENS and status == 200 for _, tokens, status in rows), rows


def test_streams_past_the_grace_period_are_cut_and_still_billed(tmp_path: Path, tiny_model_dir: Path) -> None:
    """shutdown_grace_s=0: uvicorn cancels the streams at once; each is billed for what it generated."""
    results, _, rows, output = sigterm_during_streams(tmp_path, tiny_model_dir, grace_s=0)
    cut = [r for r in results if not r.get("done")]
    assert cut, "every stream finished although the grace period was 0"
    assert len(rows) == STREAMS, f"usage rows: {rows}\n{output}"
    assert all(0 <= tokens <= MAX_TOKENS for _, tokens, _ in rows), rows
    assert any(tokens < MAX_TOKENS for _, tokens, _ in rows), rows
