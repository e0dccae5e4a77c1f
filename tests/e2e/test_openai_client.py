"""End to end with the official `openai` client against `llmaas serve` (tiny random Llama + the default embedder).

The tiny model's weights are random, so tests check shapes, counts and consistency (greedy = greedy, seed = seed,
stream = non-stream), never meaning; test_default_model.py checks meaning on the real default model.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmaas.config import DEFAULT_EMBEDDING_NAME

MESSAGES = [{"role": "user", "content": "Say something."}]


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def test_models(openai_client: Any) -> None:
    ids = [m.id for m in openai_client.models.list().data]
    assert ids == ["tiny", DEFAULT_EMBEDDING_NAME]
    assert openai_client.models.retrieve("tiny").owned_by == "llmaas"


def test_chat_non_streaming_and_usage(openai_client: Any, hf_tokenizer: Any) -> None:
    r = openai_client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=8, temperature=0)
    assert r.object == "chat.completion" and r.model == "tiny" and len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    prompt = hf_tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
    assert r.usage.prompt_tokens == len(prompt)
    if choice.finish_reason == "length":
        assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens >= 0


def test_greedy_is_repeatable_and_streaming_matches(openai_client: Any) -> None:
    kw: dict[str, Any] = dict(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    a = openai_client.chat.completions.create(**kw).choices[0].message.content
    b = openai_client.chat.completions.create(**kw).choices[0].message.content
    assert a == b
    chunks = list(openai_client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == a
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_raw_sse_framing(tiny_server: Any) -> None:
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{tiny_server.base_url}/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"


def test_n_and_seed(openai_client: Any) -> None:
    kw: dict[str, Any] = dict(model="tiny", messages=MESSAGES, max_tokens=10, temperature=1.0, seed=1234)
    a = openai_client.chat.completions.create(**kw, n=3)
    b = openai_client.chat.completions.create(**kw, n=3)
    assert [c.index for c in a.choices] == [0, 1, 2]
    texts = [c.message.content for c in a.choices]
    assert texts == [c.message.content for c in b.choices]
    assert len(set(texts)) > 1  # choices get distinct seeds
    one = openai_client.chat.completions.create(**kw)
    assert one.choices[0].message.content == texts[0]
    assert 0 < a.usage.completion_tokens <= 30


def test_stop_strings_are_never_emitted(openai_client: Any) -> None:
    kw: dict[str, Any] = dict(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0)
    full = openai_client.chat.completions.create(**kw).choices[0].message.content
    if len(full) < 6:
        pytest.skip("the random model stopped too early to pick a stop string")
    stop = full[3:5]  # two characters = at least two byte tokens: the stop is split across tokens
    cut = full[: full.index(stop)]
    r = openai_client.chat.completions.create(**kw, stop=[stop])
    assert r.choices[0].message.content == cut and r.choices[0].finish_reason == "stop"
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in openai_client.chat.completions.create(**kw, stop=stop, stream=True)
        if c.choices
    )
    assert streamed == cut


def test_chat_logprobs(openai_client: Any) -> None:
    r = openai_client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens or r.choices[0].finish_reason == "stop"
    for item in content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
        assert isinstance(item.bytes, list)


def test_completions_legacy(openai_client: Any) -> None:
    r = openai_client.completions.create(
        model="tiny", prompt="Once upon", max_tokens=5, temperature=0, logprobs=2, echo=True
    )
    choice = r.choices[0]
    assert choice.text.startswith("Once upon")
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.token_logprobs[0] is None and lp.text_offset[0] == 0
    assert len(lp.tokens) == r.usage.prompt_tokens + r.usage.completion_tokens
    many = openai_client.completions.create(model="tiny", prompt=["a", "b"], n=2, max_tokens=2, seed=5)
    assert sorted(c.index for c in many.choices) == [0, 1, 2, 3]
    tokens = openai_client.completions.create(model="tiny", prompt=[70, 71, 72], max_tokens=2, temperature=0)
    assert tokens.usage.prompt_tokens == 3
    streamed = list(
        openai_client.completions.create(model="tiny", prompt="Once upon", max_tokens=5, temperature=0, stream=True)
    )
    plain = openai_client.completions.create(model="tiny", prompt="Once upon", max_tokens=5, temperature=0)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == plain.choices[0].text


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings(openai_client: Any) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    r = openai_client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=texts)  # the client asks for base64
    vectors = [d.embedding for d in r.data]
    assert [d.index for d in r.data] == [0, 1, 2] and all(len(v) == 384 for v in vectors)
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-3  # normalized
    assert _cos(vectors[0], vectors[1]) > _cos(vectors[0], vectors[2])
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens
    floats = openai_client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=texts[0], encoding_format="float")
    assert max(abs(x - y) for x, y in zip(floats.data[0].embedding, vectors[0])) < 1e-4
    assert (
        len(openai_client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=[[101, 2023, 102], [101, 102]]).data)
        == 2
    )
    assert (
        len(openai_client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input="x", dimensions=384).data[0].embedding)
        == 384
    )


def test_cli_models_and_chat(tiny_server: Any) -> None:
    models = subprocess.run(
        [sys.executable, "-m", "llmaas", "models", "--base-url", tiny_server.url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert models.returncode == 0, models.stderr
    assert "tiny" in models.stdout and DEFAULT_EMBEDDING_NAME in models.stdout
    chat = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmaas",
            "chat",
            "--base-url",
            tiny_server.base_url,
            "--max-tokens",
            "5",
            "--temperature",
            "0",
        ],
        input="hello\nand again\n/exit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.count("tiny> ") == 2 and "error" not in chat.stderr
    assert tiny_server.healthy()
