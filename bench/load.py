"""A closed-loop streaming chat load generator for OpenAI-compatible servers, and the statistics it reports.

`concurrency` workers each send one streaming /v1/chat/completions request at a time until the request list is
used up or the level's time cap passes (then in-flight streams are cancelled and reported as such). Every stream
records when its first content token arrived, when its last one did and how many output tokens it produced: the
server's `usage.completion_tokens` when it reports one, else the streamed text re-tokenized with the model's own
tokenizer (method recorded per level). It knows nothing about how the servers are started (see peers.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field

import httpx

# Words for prompts: common, single-token-ish, so ~128 prompt tokens is easy to hit exactly.
_WORDS = (
    "river mountain city garden engine window market teacher doctor forest ocean bridge village castle "
    "winter summer morning evening letter travel music library school station harbor island desert "
    "storm candle silver golden history science planet rocket signal machine pattern story journey "
    "kitchen bread coffee paper pencil camera animal horse eagle tiger mirror shadow light thunder"
).split()


@dataclass
class Workload:
    """The requests of one benchmark, identical for every server: chat messages and max_tokens per request."""

    messages: list[list[dict]]
    max_tokens: list[int]
    prompt_tokens: list[int]


def make_workload(
    tokenizer, n: int, prompt_tokens: int = 128, out_min: int = 64, out_max: int = 128, seed: int = 0
) -> Workload:
    """n distinct prompts of ~prompt_tokens tokens (chat template included) and max_tokens drawn from [out_min, out_max]."""
    rng = random.Random(seed)
    msgs, maxes, counts = [], [], []
    for i in range(n):
        words = [rng.choice(_WORDS) for _ in range(prompt_tokens)]
        lo, hi = 1, len(words)
        while lo < hi:  # largest word count whose templated prompt fits in prompt_tokens
            mid = (lo + hi + 1) // 2
            if _count(tokenizer, _message(i, words[:mid])) <= prompt_tokens:
                lo = mid
            else:
                hi = mid - 1
        m = _message(i, words[:lo])
        msgs.append(m)
        counts.append(_count(tokenizer, m))
        maxes.append(rng.randint(out_min, out_max))
    return Workload(msgs, maxes, counts)


def _message(i: int, words: list[str]) -> list[dict]:
    return [{"role": "user", "content": f"Story {i}. Write a long story that uses these words: {' '.join(words)}"}]


def _count(tokenizer, messages: list[dict]) -> int:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


# --- one stream ---------------------------------------------------------------------------------------


@dataclass
class StreamResult:
    max_tokens: int
    t_start: float
    t_first: float | None = None
    t_last: float | None = None
    t_end: float | None = None
    chunks: int = 0  # SSE chunks that carried content
    text: str = ""
    usage_tokens: int | None = None
    finish_reason: str | None = None
    status: str = "running"  # ok | error | cancelled
    error: str | None = None
    n_out: int = 0  # verified output tokens


async def stream_chat(client: httpx.AsyncClient, url: str, body: dict, res: StreamResult) -> None:
    """Send one streaming chat request and fill `res` as chunks arrive (safe to cancel mid-stream)."""
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                res.status, res.error = "error", f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}"
                return
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("error"):
                    res.status, res.error = "error", str(chunk["error"])[:300]
                    return
                if chunk.get("usage"):
                    res.usage_tokens = chunk["usage"].get("completion_tokens")
                for choice in chunk.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        now = time.perf_counter()
                        res.t_first = res.t_first or now
                        res.t_last = now
                        res.chunks += 1
                        res.text += content
                    if choice.get("finish_reason"):
                        res.finish_reason = choice["finish_reason"]
        res.status = "ok"
    except asyncio.CancelledError:
        res.status = "cancelled"
        raise
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        res.status, res.error = "error", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        res.t_end = time.perf_counter()


# --- one level ------------------------------------------------------------------------------------------


@dataclass
class LevelResult:
    concurrency: int
    wall_s: float
    requests: int
    completed: int
    cancelled: int
    errors: int
    output_tokens: int
    tokens_exact: int  # completed streams whose verified token count == max_tokens
    token_count_method: str
    out_tok_s: float
    req_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    ttft_censored: int  # streams cancelled before a first token: their TTFT counts as the time waited
    tpot_p50_ms: float | None
    tpot_p99_ms: float | None
    peak_rss_mb: float | None = None
    first_error: str | None = None
    sample_text: str = ""
    extra: dict = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def run_level(
    base_url: str,
    model,
    work: Workload,
    concurrency: int,
    n_requests: int,
    extra_body,
    tokenizer,
    issue_s: float = 60.0,
    cap_s: float = 120.0,
    offset: int = 0,
) -> LevelResult:
    """Drive `concurrency` closed-loop workers over n_requests of `work` from `offset` on (cycled). Give each level its
    own offset: a server with a prefix cache would otherwise answer a prompt it has already seen.

    `model` is a name or a function of the request index. extra_body(max_tokens) -> dict of server-specific
    fields (EOS suppression). Workers stop taking new requests
    after issue_s; anything still streaming at cap_s is cancelled.
    """
    url = base_url.rstrip("/") + "/v1/chat/completions"
    results: list[StreamResult] = []
    next_i = 0
    t0 = time.perf_counter()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < n_requests and time.perf_counter() - t0 < issue_s:
            i = next_i
            next_i += 1
            j = (offset + i) % len(work.messages)
            m = work.max_tokens[j]
            body = {
                "model": model(i) if callable(model) else model,
                "messages": work.messages[j],
                "stream": True,
                "max_tokens": m,
                "temperature": 0,
                **extra_body(m),
            }
            res = StreamResult(max_tokens=m, t_start=time.perf_counter())
            results.append(res)
            await stream_chat(client, url, body, res)

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(cap_s + 30, connect=30), limits=limits) as client:
        tasks = [asyncio.create_task(worker(client)) for _ in range(concurrency)]
        done, pending = await asyncio.wait(tasks, timeout=max(0.0, cap_s - (time.perf_counter() - t0)))
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for r in results:
        if r.status == "running":
            r.status = "cancelled"
            r.t_end = r.t_end or time.perf_counter()
    return summarize(concurrency, results, t0, tokenizer)


def summarize(concurrency: int, results: list[StreamResult], t0: float, tokenizer) -> LevelResult:
    methods = set()
    for r in results:
        if r.status == "ok" and r.usage_tokens is not None:
            r.n_out = r.usage_tokens
            methods.add("usage")
        elif r.text:
            # No usage from the server (or a cancelled stream): re-tokenize what arrived.
            r.n_out = len(tokenizer.encode(r.text, add_special_tokens=False))
            methods.add("retokenized")
    ok = [r for r in results if r.status == "ok"]
    ends = [r.t_end for r in results if r.t_end]
    wall = (max(ends) if ends else time.perf_counter()) - t0
    ttft = [(r.t_first - r.t_start) * 1e3 for r in results if r.t_first]
    censored = [(r.t_end - r.t_start) * 1e3 for r in results if r.status == "cancelled" and not r.t_first]
    tpot = [(r.t_last - r.t_first) * 1e3 / (r.n_out - 1) for r in ok if r.t_first and r.n_out > 1]
    tokens = sum(r.n_out for r in results)
    errors = [r for r in results if r.status == "error"]
    return LevelResult(
        concurrency=concurrency,
        wall_s=wall,
        requests=len(results),
        completed=len(ok),
        cancelled=sum(r.status == "cancelled" for r in results),
        errors=len(errors),
        output_tokens=tokens,
        tokens_exact=sum(r.n_out == r.max_tokens for r in ok),
        token_count_method="+".join(sorted(methods)) or "-",
        out_tok_s=tokens / wall if wall > 0 else 0.0,
        req_s=len(ok) / wall if wall > 0 else 0.0,
        ttft_p50_ms=percentile(ttft + censored, 0.5),
        ttft_p99_ms=percentile(ttft + censored, 0.99),
        ttft_censored=len(censored),
        tpot_p50_ms=percentile(tpot, 0.5),
        tpot_p99_ms=percentile(tpot, 0.99),
        first_error=errors[0].error if errors else None,
        sample_text=(ok[0].text[:120] if ok else ""),
        extra={"streams": [[r.max_tokens, r.n_out, r.status, r.finish_reason] for r in results]},
    )


async def probe(base_url: str, model: str, strategies: list, tokenizer, max_tokens: int = 24) -> tuple[int, dict]:
    """Find the first EOS-suppression strategy that makes a short-answer prompt produce exactly max_tokens.

    Returns (index of the strategy, details). Index -1 when none does (the level results then show it).
    """
    msgs = [{"role": "user", "content": "Reply with just the word OK."}]
    work = Workload([msgs], [max_tokens], [0])
    details = {}
    for i, strategy in enumerate(strategies):
        lvl = await run_level(base_url, model, work, 1, 1, strategy, tokenizer, issue_s=60, cap_s=120)
        details[i] = {
            "tokens": lvl.output_tokens,
            "completed": lvl.completed,
            "error": lvl.first_error,
            "example": json.dumps(strategy(max_tokens)),
        }
        if lvl.completed and lvl.tokens_exact:
            return i, details
    return -1, details


def as_dict(x) -> dict:
    return asdict(x)
