"""The Batch API's two promises, measured on one `llmaas serve`: interactive latency barely moves while a batch runs,
and the batch itself still gets the machine's throughput.

    python bench/batch.py                          # the default model, 64 batch lines of 128 tokens
    python bench/batch.py --tiny --lines 32        # a tiny random model: a quick check of the mechanics only

1. Idle: `--probes` streaming chat requests one after another (max_tokens 16); their time to first token (TTFT).
2. Under a batch: the same probes while a batch of `--lines` chat lines (`--out` tokens each, EOS ignored) runs.
   The issue's target: TTFT p50 under the batch ≤ 1.5× idle.
3. Throughput: the batch's output tokens / its wall time (created → completed), against the same requests sent
   interactively at full concurrency (all at once, streaming off). Batch lines run at most `batch_concurrency` at a
   time and only in capacity interactive work leaves free, so the ratio says what the priority costs when idle.

Not part of the tests; it starts its own server on loopback in a temporary folder (tests.support.server).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="A tiny random model (mechanics only, not speed).")
    p.add_argument("--lines", type=int, default=64, help="Batch lines.")
    p.add_argument("--out", type=int, default=128, help="Output tokens per batch line.")
    p.add_argument("--probes", type=int, default=12, help="Interactive requests per phase.")
    p.add_argument("--concurrency", type=int, default=16, help="batch_concurrency of the server.")
    return p.parse_args(argv)


def start(root: Path, args: argparse.Namespace) -> Any:
    from tests.support.server import serve

    config: dict[str, Any] = {"batch_concurrency": args.concurrency, "batch_poll_s": 0.2, "start_worker": False}
    if args.tiny:
        from tests.support.tiny import build_tiny_llama

        model = build_tiny_llama(root / "tiny")
        config["models"] = [{"name": "chat", "source": str(model), "kind": "chat", "kv_cache_mb": 64}]
    return serve(root / "server", config, auth=False, worker=False)


def model_name(client: Any) -> str:
    return next(m.id for m in client.models.list().data if getattr(m, "kind", "chat") != "embedding")


def ttft(client: Any, model: str, i: int) -> float:
    t = time.perf_counter()
    stream = client.chat.completions.create(
        model=model,
        stream=True,
        max_tokens=16,
        temperature=0,
        messages=[{"role": "user", "content": f"Say something about topic {i}."}],
    )
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t
    return first if first is not None else time.perf_counter() - t


def bodies(model: str, n: int, out: int) -> list[dict[str, Any]]:
    return [
        {
            "model": model,
            "max_tokens": out,
            "ignore_eos": True,
            "temperature": 0,
            "messages": [{"role": "user", "content": f"Write a long story about river number {i}."}],
        }
        for i in range(n)
    ]


def run_batch(client: Any, model: str, args: argparse.Namespace, probe: bool) -> tuple[float, int, list[float]]:
    data = "".join(
        json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/chat/completions", "body": b}) + "\n"
        for i, b in enumerate(bodies(model, args.lines, args.out))
    ).encode()
    f = client.files.create(file=("bench.jsonl", io.BytesIO(data)), purpose="batch")
    t0 = time.perf_counter()
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    probes: list[float] = []
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        if probe and batch.status == "in_progress" and len(probes) < args.probes:
            probes.append(ttft(client, model, 1000 + len(probes)))
        else:
            time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    wall = time.perf_counter() - t0
    out = (
        [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        if batch.output_file_id
        else []
    )
    tokens = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in out)
    return wall, tokens, probes


async def interactive(base_url: str, model: str, args: argparse.Namespace) -> tuple[float, int]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=3600)
    t0 = time.perf_counter()

    def call(b: dict[str, Any]) -> Any:
        extra = {"ignore_eos": b.pop("ignore_eos")}  # an llmaas extension: not a parameter of the SDK
        return client.chat.completions.create(**b, extra_body=extra)

    results = await asyncio.gather(*(call(b) for b in bodies(model, args.lines, args.out)))
    return time.perf_counter() - t0, sum(r.usage.completion_tokens for r in results)


def main(argv: list[str] | None = None) -> None:
    import openai

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llmaas-bench-batch-") as tmp:
        server = start(Path(tmp), args)
        try:
            client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0, timeout=3600)
            model = model_name(client)
            ttft(client, model, -1)  # warm-up
            idle = [ttft(client, model, i) for i in range(args.probes)]
            b_wall, b_tokens, loaded = run_batch(client, model, args, probe=True)
            q_wall, q_tokens, _ = run_batch(client, model, args, probe=False)  # the batch alone, nothing interfering
            i_wall, i_tokens = asyncio.run(interactive(server.base_url, model, args))
        finally:
            server.stop()
    p50_idle, p50_loaded = statistics.median(idle), statistics.median(loaded) if loaded else float("nan")
    print(f"model {model}: {args.lines} lines x {args.out} tokens, batch_concurrency {args.concurrency}")
    print(
        f"interactive TTFT p50: idle {p50_idle * 1e3:.0f} ms, while a batch runs {p50_loaded * 1e3:.0f} ms "
        f"({len(loaded)} probes) -> {p50_loaded / p50_idle:.2f}x idle (target <= 1.5x)"
    )
    print(
        f"batch throughput: {q_tokens / q_wall:.1f} tok/s alone ({b_tokens / b_wall:.1f} tok/s beside the probes); "
        f"the same requests sent interactively at full concurrency: {i_tokens / i_wall:.1f} tok/s "
        f"-> batch/interactive {q_tokens / q_wall / (i_tokens / i_wall):.2f}"
    )


if __name__ == "__main__":
    main()
