"""/v1/embeddings in-process: input forms, base64, dimensions, bounds."""

from __future__ import annotations

import base64
import struct
from typing import Any


def embed(client: Any, **body: Any) -> Any:
    body.setdefault("model", "emb")
    return client.post("/v1/embeddings", json=body)


def test_input_forms(client: Any, meter: Any) -> None:
    body = embed(client, input="hello").json()
    assert body["object"] == "list" and body["model"] == "emb"
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    assert len(body["data"][0]["embedding"]) == 8
    assert body["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert meter.settled[-1]["prompt"] == 5
    assert [d["index"] for d in embed(client, input=["a", "b", "c"]).json()["data"]] == [0, 1, 2]
    assert len(embed(client, input=[70, 71]).json()["data"]) == 1
    assert len(embed(client, input=[[70], [71, 72]]).json()["data"]) == 2


def test_base64_matches_floats(client: Any) -> None:
    floats = embed(client, input="hello").json()["data"][0]["embedding"]
    b64 = embed(client, input="hello", encoding_format="base64").json()["data"][0]["embedding"]
    raw = base64.b64decode(b64)
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert [round(x, 5) for x in decoded] == [round(x, 5) for x in floats]


def test_dimensions(client: Any) -> None:
    assert embed(client, input="x", dimensions=8).status_code == 200
    r = embed(client, input="x", dimensions=4)
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions" and "8" in r.json()["error"]["message"]


def test_bad_inputs(client: Any, settings: Any) -> None:
    for bad, param in [("", "input"), ([], "input"), (["a", ""], "input[1]"), ([1, "a"], "input"), ([300], "input")]:
        r = embed(client, input=bad)
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["param"] == param, (bad, r.json())
    r = embed(client, input="x" * 65)  # max_model_len 64
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    settings.limits.max_embedding_inputs = 2
    r = embed(client, input=["a", "b", "c"])
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
    r = embed(client, model="nope", input="a")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
