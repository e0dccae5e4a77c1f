"""/v1/completions in-process: prompt forms, choice numbering, echo, legacy logprobs, streaming."""

from __future__ import annotations

import json
from typing import Any

from tests.support.fakes import GREEDY_REPLY


def complete(client: Any, **body: Any) -> Any:
    body.setdefault("model", "tiny")
    return client.post("/v1/completions", json=body)


def test_shape_and_usage(client: Any) -> None:
    r = complete(client, prompt="Hello", temperature=0)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": GREEDY_REPLY, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"]["prompt_tokens"] == 5


def test_prompt_forms_and_indices(client: Any, registry: Any) -> None:
    body = complete(client, prompt=["a", "bb"], n=2, max_tokens=2, seed=1).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 3  # each prompt counted once
    assert body["usage"]["completion_tokens"] == 8
    assert complete(client, prompt=[75, 76], max_tokens=1).status_code == 200
    assert registry.engines["tiny"].submitted[-1].prompt_token_ids == [75, 76]
    assert complete(client, prompt=[[75], [76, 77]], max_tokens=1).json()["usage"]["prompt_tokens"] == 3
    r = complete(client, prompt=[75, 9999])
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = complete(client, prompt=["a"] * 5, n=2)  # 10 choices > max_n 8
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"
    for bad in ([], "", [[]]):
        assert complete(client, prompt=bad).status_code == 400
    r = complete(client, prompt=["a", ""])  # the one emptiness check names the prompt that is empty
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt[1]"
    assert r.json()["error"]["message"] == "The prompt is empty."


def test_echo_and_legacy_logprobs(client: Any) -> None:
    body = complete(client, prompt="Hi", echo=True, logprobs=2, max_tokens=3, temperature=0).json()
    choice = body["choices"][0]
    assert choice["text"] == "HiThe"
    lp = choice["logprobs"]
    assert lp["tokens"] == ["H", "i", "T", "h", "e"]
    assert lp["token_logprobs"][0] is None and all(isinstance(x, float) for x in lp["token_logprobs"][1:])
    assert lp["top_logprobs"][0] is None and len(lp["top_logprobs"][2]) == 2
    assert lp["text_offset"] == [0, 1, 2, 3, 4]


def test_streaming(client: Any) -> None:
    r = complete(client, prompt="Hi", echo=True, stream=True, temperature=0, stream_options={"include_usage": True})
    blocks = [b[len("data: ") :] for b in r.text.split("\n\n") if b.strip()]
    assert blocks[-1] == "[DONE]"
    chunks = [json.loads(b) for b in blocks[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "Hi" + GREEDY_REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 2


def test_refused_features(client: Any) -> None:
    for extra, param in [({"suffix": "x"}, "suffix"), ({"best_of": 3}, "best_of"), ({"logprobs": 21}, "logprobs")]:
        r = complete(client, prompt="a", **extra)
        assert r.status_code == 400 and r.json()["error"]["param"] == param
    assert complete(client, prompt="a", best_of=1, max_tokens=1).status_code == 200
