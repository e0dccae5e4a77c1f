"""/v1/chat/completions in-process: shapes, streaming framing, sampling knobs, errors, metering, disconnects."""

from __future__ import annotations

import json
from typing import Any

from tests.support.fakes import GREEDY_REPLY


def chat(client: Any, **body: Any) -> Any:
    body.setdefault("model", "tiny")
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return client.post("/v1/chat/completions", json=body)


def sse(response: Any) -> list[Any]:
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_non_streaming_shape_and_usage(client: Any, registry: Any, meter: Any) -> None:
    r = chat(client, temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": GREEDY_REPLY, "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    prompt = registry.engines["tiny"].submitted[0].prompt_token_ids
    usage = body["usage"]
    assert usage["prompt_tokens"] == len(prompt)
    assert usage["completion_tokens"] == len(GREEDY_REPLY.encode()) + 1  # + EOS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    assert r.headers["x-ratelimit-remaining-requests"] == "99"
    assert meter.admitted[0]["tokens"] == len(prompt) + 64  # prompt + default max_tokens × n
    assert meter.settled == [
        dict(prompt=usage["prompt_tokens"], completion=usage["completion_tokens"], status=200, model="tiny")
    ]
    assert registry.engines["tiny"].submitted[0].cache_salt == "default"


def test_streaming_framing(client: Any) -> None:
    r = chat(client, temperature=0, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-ratelimit-remaining-requests"] == "99"
    events = sse(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    final = chunks[-2]["choices"][0]
    assert final["delta"] == {} and final["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == GREEDY_REPLY
    assert all("usage" not in c for c in chunks[:-1])


def test_streaming_without_usage_has_no_usage_chunk(client: Any) -> None:
    events = sse(chat(client, temperature=0, stream=True))
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(e["choices"] for e in events[:-1])


def test_max_tokens_gives_length(client: Any) -> None:
    body = chat(client, temperature=0, max_tokens=3).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    body = chat(client, temperature=0, max_completion_tokens=2).json()
    assert body["usage"]["completion_tokens"] == 2


def test_n_and_seed(client: Any) -> None:
    a = chat(client, n=3, seed=7, temperature=1).json()
    b = chat(client, n=3, seed=7, temperature=1).json()
    assert [c["index"] for c in a["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in a["choices"]]
    assert texts == [c["message"]["content"] for c in b["choices"]]
    assert len(set(texts)) == 3  # distinct per-choice seeds
    single = chat(client, seed=7, temperature=1).json()
    assert single["choices"][0]["message"]["content"] == texts[0]


def test_n_streaming_indices(client: Any) -> None:
    events = sse(chat(client, n=2, seed=1, stream=True, max_tokens=5))
    finals = [c["choices"][0] for c in events[:-1] if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finals) == [0, 1]
    roles = [c["choices"][0]["index"] for c in events[:2]]
    assert roles == [0, 1] and all(c["choices"][0]["delta"].get("role") == "assistant" for c in events[:2])


def test_stop_sequences_are_not_emitted(client: Any, registry: Any) -> None:
    body = chat(client, temperature=0, stop=["42"]).json()
    assert body["choices"][0]["message"]["content"] == "The answer is "
    assert body["choices"][0]["finish_reason"] == "stop"
    assert registry.engines["tiny"].submitted[-1].params.stop == ["42"]
    body = chat(client, temperature=0, stop="é").json()  # a multi-byte stop string
    assert body["choices"][0]["message"]["content"] == "The answer is 42 — caf"


def test_logprobs_shape(client: Any) -> None:
    body = chat(client, temperature=0, logprobs=True, top_logprobs=2, max_tokens=4).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 4
    first = content[0]
    assert first["token"] == "T" and first["bytes"] == [84] and isinstance(first["logprob"], float)
    assert len(first["top_logprobs"]) == 2 and set(first["top_logprobs"][0]) == {"token", "logprob", "bytes"}


def test_sampling_params_reach_the_engine(client: Any, registry: Any) -> None:
    r = chat(
        client,
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"72": 5, "73": -100},
        user="u1",
        seed=3,
    )
    assert r.status_code == 200, r.text
    p = registry.engines["tiny"].submitted[-1].params
    assert (p.temperature, p.top_p, p.top_k, p.presence_penalty, p.frequency_penalty, p.seed) == (
        0.5,
        0.9,
        5,
        0.5,
        -0.5,
        3,
    )
    assert p.logit_bias == {72: 5.0, 73: -100.0}


def test_content_parts_and_developer_role(client: Any, registry: Any) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
    ]
    assert chat(client, messages=messages, temperature=0).status_code == 200
    prompt = registry.engines["tiny"].tokenizer.decode(
        registry.engines["tiny"].submitted[-1].prompt_token_ids, skip_special_tokens=False
    )
    assert "<|im_start|>system\nBe brief." in prompt and "Hi\nthere" in prompt


def test_unknown_fields_are_ignored(client: Any) -> None:
    r = chat(
        client,
        temperature=0,
        store=False,
        metadata={"a": "b"},
        service_tier="auto",
        parallel_tool_calls=True,
        something_new=1,
    )
    assert r.status_code == 200, r.text


def test_fine_tuned_model_uses_its_adapter(authed_client: Any, registry: Any) -> None:
    r = authed_client.post(
        "/v1/chat/completions",
        headers={"Authorization": "Bearer sk-a"},
        json={"model": "ft:tiny:proj-a:mine:ftjob-1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "ft:tiny:proj-a:mine:ftjob-1"
    req = registry.engines["tiny"].submitted[-1]
    assert req.adapter_id == "adapter-1" and req.cache_salt == "proj-a"
    assert "adapter-1" in registry.engines["tiny"].adapters


def test_disconnect_mid_stream_aborts_and_bills(client: Any, registry: Any, meter: Any) -> None:
    messages = [{"role": "user", "content": "SLOW please"}]
    with client.stream(
        "POST", "/v1/chat/completions", json={"model": "tiny", "messages": messages, "stream": True, "temperature": 0}
    ) as r:
        lines = r.iter_lines()
        for _ in range(4):
            next(lines)
    engine = registry.engines["tiny"]
    meter.wait_settled()
    assert engine.submitted[-1].request_id in engine.aborted
    assert meter.settled and meter.settled[-1]["completion"] < len(GREEDY_REPLY.encode())
    assert chat(client, temperature=0).status_code == 200  # still healthy


def test_sse_frames_survive_splitlines_clients() -> None:
    """U+2028/U+2029/U+0085 in generated text are line breaks to str.splitlines (httpx's iter_lines splits on them):
    a data line must stay one line, and decode to the same text."""
    import json

    from pydantic import BaseModel

    from llmaas.api.sse import encode

    class Chunk(BaseModel):
        text: str

    text = "a\u2028b\u2029c\x85d\x1ce"
    frame = encode(Chunk(text=text))
    lines = frame.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0][len("data: ") :]) == {"text": text}


def test_every_choice_reports_its_token_times_and_usage(client: Any, settings: Any) -> None:
    """n=2 streamed: each sequence's first token and each later gap are observed once, from the engine's times."""
    from prometheus_client import REGISTRY

    from llmaas import metrics

    label = metrics.model_label("tiny", {m.name for m in settings.models})

    def counts() -> tuple[float, ...]:
        names = ("time_to_first_token_seconds_count", "inter_token_latency_seconds_count", "completion_tokens_total")
        return tuple(REGISTRY.get_sample_value(f"llmaas_{n}", {"model": label}) or 0.0 for n in names)

    before = counts()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "n": 2, "max_tokens": 5}
    with client.stream("POST", "/v1/chat/completions", json={**body, "temperature": 0}) as r:
        assert r.status_code == 200 and "data: [DONE]" in list(r.iter_lines())
    assert tuple(a - b for a, b in zip(counts(), before)) == (2, 8, 10)
