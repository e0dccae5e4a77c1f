"""Issue 14, each fault reproduced against `llmaas serve` on loopback (auth on, a tiny queue, a 64 KiB upload cap).

The in-process sweeps of the same faults (every field, every route) are tests/api/test_reliability.py; these check
that the real server, as a client meets it, answers them: 400s for text that is not Unicode and for mistyped
numbers, no billing for 429 server_overloaded, the upload cap on the file's bytes, a 400 for a request no wait can
admit, 128-bit ids, revocation from another process within 1 s, not-found floods cut off, downloads as attachments.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from llmaas.cli import cli

UPLOAD_CAP = 65536


@pytest.fixture(scope="module")
def server(serve_llmaas: Callable[..., Any], tiny_config: Callable[..., dict[str, Any]]) -> Iterator[Any]:
    config = tiny_config(
        chat={"max_num_seqs": 2, "max_waiting": 2},
        default_max_tokens=16,
        usage_flush_s=0.2,
        limits={"max_upload_bytes": UPLOAD_CAP, "max_not_found_per_minute": 20},
    )
    s = serve_llmaas(config, auth=True)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def http(server: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {server.api_key}"}) as c:
        yield c


def new_key(http: httpx.Client, project: str, **limits: Any) -> dict[str, Any]:
    if http.get(f"/admin/projects/{project}").status_code == 404:
        assert http.post("/admin/projects", json={"id": project, "name": project}).status_code == 200
    r = http.post("/admin/keys", json={"project_id": project, "name": "t", **limits})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def bearer(key: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {key['key']}"}


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return r.json()["error"]  # type: ignore[no-any-return]


# --- polish: a first start reads as address, models, admin key ----------------------------------------------


def test_a_first_start_log_is_short(server: Any) -> None:
    out = server.output
    assert "llmaas: listening on" in out and "first admin API key" in out and "loaded chat model 'tiny'" in out
    assert "alembic" not in out, out  # no line per plugin or migration step
    assert "it/s]" not in out and "%|" not in out, out  # no tqdm bars


# --- 1, 2: text and numbers ---------------------------------------------------------------------------------


def test_a_lone_surrogate_is_a_400_not_a_500(server: Any, http: httpx.Client) -> None:
    body = '{"model":"tiny","messages":[{"role":"user","content":"a\\ud800b"}],"max_tokens":4}'
    r = http.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    e = error_of(r, 400)
    assert e["param"] == "messages[0].content" and e["type"] == "invalid_request_error"
    for path, body, param in [
        ("/v1/completions", '{"model":"tiny","prompt":"x\\udfff"}', "prompt"),
        ("/v1/embeddings", '{"model":"all-MiniLM-L6-v2","input":["ok","\\ud83d"]}', "input[1]"),
        ("/v1/classifications", '{"model":"tiny","input":"ok","labels":["a","\\udc00"]}', "labels[1]"),
        (
            "/v1/chat/completions",
            '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stop":"\\ud800"}',
            "stop",
        ),
    ]:
        assert (
            error_of(http.post(path, content=body, headers={"Content-Type": "application/json"}), 400)["param"] == param
        )
    assert "Traceback" not in server.output
    ok = http.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "😀"}], "max_tokens": 2}
    )
    assert ok.status_code == 200, ok.text


def test_booleans_and_strings_are_not_numbers(http: httpx.Client) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    for field, value in [
        ("max_tokens", True),
        ("max_tokens", "4"),
        ("max_tokens", 1.5),
        ("n", True),
        ("temperature", "0"),
        ("seed", False),
        ("stream", 1),
    ]:
        e = error_of(http.post("/v1/chat/completions", json={"model": "tiny", "messages": msgs, field: value}), 400)
        assert e["param"] == field and e["type"] == "invalid_request_error", (field, value, e)
    e = error_of(http.post("/v1/embeddings", json={"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": True}), 400)
    assert e["param"] == "dimensions"


# --- 3: refused requests bill nothing -----------------------------------------------------------------------


def _budget_used(server: Any, scope: str) -> int:
    period = dt.datetime.now(dt.UTC).strftime("%Y-%m")
    with sqlite3.connect(server.data_dir / "llmaas.db") as db:
        row = db.execute("SELECT used FROM budget_counters WHERE scope = ? AND period = ?", (scope, period)).fetchone()
    return int(row[0]) if row else 0


def test_requests_refused_with_server_overloaded_are_not_billed(server: Any, http: httpx.Client) -> None:
    key = new_key(http, "overload", monthly_token_budget=10_000_000)
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "count " * 20}],
        "max_tokens": 48,
        "ignore_eos": True,
    }

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120, headers=bearer(key)) as c:
            return list(await asyncio.gather(*[c.post("/v1/chat/completions", json=body) for _ in range(16)]))

    responses = asyncio.run(burst())
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(served) + len(refused) == 16 and served and refused, [r.status_code for r in responses]
    for r in refused:
        assert r.json()["error"]["code"] == "server_overloaded" and int(r.headers["retry-after"]) >= 1
    billed = sum(r.json()["usage"]["total_tokens"] for r in served)
    assert _budget_used(server, f"key:{key['id']}") == billed  # nothing reserved for the refused ones stays charged
    time.sleep(0.6)  # usage_flush_s = 0.2
    usage = http.get("/v1/usage", params={"project_id": "overload", "group_by": "key"}).json()["data"]
    assert usage[0]["requests"] == 16 and usage[0]["total_tokens"] == billed


# --- 4, 9: uploads and downloads ------------------------------------------------------------------------------


def exact_jsonl(size: int) -> bytes:
    head, tail = b'{"prompt": "', b'", "completion": "ok"}\n'
    return head + b"p" * (size - len(head) - len(tail)) + tail


def test_the_upload_cap_is_the_files_own_size_and_downloads_are_attachments(server: Any, http: httpx.Client) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120)
    f = client.files.create(file=("exact.jsonl", io.BytesIO(exact_jsonl(UPLOAD_CAP))), purpose="fine-tune")
    assert f.bytes == UPLOAD_CAP
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(file=("over.jsonl", io.BytesIO(exact_jsonl(UPLOAD_CAP + 1))), purpose="fine-tune")
    assert info.value.status_code == 413 and info.value.code == "payload_too_large"
    r = http.get(f"/v1/files/{f.id}/content")
    assert r.status_code == 200 and r.content == exact_jsonl(UPLOAD_CAP)
    assert r.headers["content-disposition"] == f'attachment; filename="{f.id}.jsonl"'

    # 6: every id a client can name carries 128 random bits
    job = client.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    assert re.fullmatch(r"file-[0-9a-f]{16}[0-9a-f]{32}", f.id) and re.fullmatch(
        r"ftjob-[0-9a-f]{16}[0-9a-f]{32}", job.id
    )
    key = new_key(http, "ids")
    assert re.fullmatch(r"key-[0-9a-f]{32}", key["id"])
    chat = http.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
    )
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", chat.json()["id"])
    client.fine_tuning.jobs.cancel(job.id)


# --- 5: a request that can never fit ---------------------------------------------------------------------------


def test_a_request_over_the_tpm_limit_is_a_400_and_every_429_has_retry_after(http: httpx.Client) -> None:
    key = new_key(http, "tpm", tpm=799, rpm=2)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 8, "max_tokens": 100}
    e = error_of(http.post("/v1/chat/completions", json=body, headers=bearer(key)), 400)
    assert e["code"] == "request_too_large" and e["param"] == "max_tokens" and "799" in e["message"]
    small = {**body, "n": 1, "max_tokens": 2}
    assert http.post("/v1/chat/completions", json=small, headers=bearer(key)).status_code == 200
    assert http.post("/v1/chat/completions", json=small, headers=bearer(key)).status_code == 200
    r = http.post("/v1/chat/completions", json=small, headers=bearer(key))
    assert error_of(r, 429)["code"] == "rate_limit_exceeded" and int(r.headers["retry-after"]) >= 1


# --- 7: revocation from another process -------------------------------------------------------------------------


def test_a_key_revoked_by_another_process_stops_within_a_second(server: Any, http: httpx.Client) -> None:
    key = new_key(http, "revoke")
    assert http.get("/v1/models", headers=bearer(key)).status_code == 200  # now cached by the server
    env = {**os.environ, "LLMAAS_DATA_DIR": str(server.data_dir)}
    out = CliRunner().invoke(cli, ["keys", "revoke", key["id"]], env=env)
    assert out.exit_code == 0, out.output
    revoked_at = time.monotonic()
    while http.get("/v1/models", headers=bearer(key)).status_code == 200:
        assert time.monotonic() - revoked_at < 1.5, "a revoked key still works after the documented 1 s"
        time.sleep(0.05)
    e = error_of(http.get("/v1/models", headers=bearer(key)), 401)
    assert e["code"] == "invalid_api_key" and "revoked" in e["message"]


# --- 8: not-found floods -----------------------------------------------------------------------------------------


def test_guessing_ids_is_cut_off(server: Any, http: httpx.Client) -> None:
    key = new_key(http, "scanner")
    client = openai.OpenAI(base_url=server.base_url, api_key=key["key"], max_retries=0, timeout=60)
    mine = client.files.create(
        file=("a.jsonl", io.BytesIO(b'{"prompt": "a", "completion": "b"}\n')), purpose="fine-tune"
    )
    statuses = [http.get(f"/v1/files/file-{i:048x}", headers=bearer(key)).status_code for i in range(25)]
    assert statuses == [404] * 20 + [429] * 5
    r = http.get(f"/v1/files/{mine.id}", headers=bearer(key))  # an id that exists is refused the same way
    assert error_of(r, 429)["code"] == "rate_limit_exceeded" and 1 <= int(r.headers["retry-after"]) <= 60
    assert http.get(f"/v1/files/file-{0:048x}").status_code == 404  # other keys are not affected
    assert json.loads(http.get("/health").text)  # and the server is fine
