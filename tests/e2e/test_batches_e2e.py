"""The Batch API end to end: `llmaas serve` (auth on) and the official openai client — chat and embeddings batches
answer as the interactive endpoints do, a bad line lands in the error file, cancel keeps partial output, another
project sees nothing, and a kill -9 mid-batch then a restart completes every line exactly once (output and usage).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from llmaas.config import DEFAULT_EMBEDDING_NAME
from tests.support.server import LlmaasProcess

LEASE_S = 1.5


def lines(url: str, bodies: list[dict[str, Any]], prefix: str = "req") -> bytes:
    rows = [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": url, "body": b} for i, b in enumerate(bodies)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def chat_body(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny",
        "temperature": 0,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": f"q{i}"}],
        **extra,
    }


def submit(client: openai.OpenAI, data: bytes, endpoint: str, **kw: Any) -> Any:
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h", **kw)  # type: ignore[arg-type]


def wait(client: openai.OpenAI, batch_id: str, until: Callable[[Any], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        b = client.batches.retrieve(batch_id)
        if until(b):
            return b
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} still {b.status}: {b.request_counts}")


def finished(b: Any) -> bool:
    return b.status in ("completed", "failed", "expired", "cancelled")


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x.strip()]


@pytest.fixture(scope="module")
def server(serve_llmaas: Callable[..., LlmaasProcess], tiny_config: Callable[..., dict[str, Any]]) -> LlmaasProcess:
    return serve_llmaas(
        tiny_config(default_max_tokens=16, batch_lease_s=LEASE_S, batch_poll_s=0.1, batch_concurrency=4), auth=True
    )


@pytest.fixture(scope="module")
def client(server: LlmaasProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=60)


def test_chat_batch_answers_as_interactive_requests_do(client: openai.OpenAI) -> None:
    bodies = [chat_body(i) for i in range(6)]
    batch = submit(client, lines("/v1/chat/completions", bodies), "/v1/chat/completions", metadata={"job": "nightly"})
    assert batch.id.startswith("batch_") and batch.object == "batch" and batch.status == "validating"
    assert batch.request_counts.total == 6 and batch.metadata == {"job": "nightly"}
    done = wait(client, batch.id, finished)
    assert done.status == "completed" and done.error_file_id is None
    assert (done.request_counts.completed, done.request_counts.failed) == (6, 0)
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.expires_at > done.created_at
    out = read_lines(client, done.output_file_id)
    assert sorted(r["custom_id"] for r in out) == [f"req-{i}" for i in range(6)]
    for row in out:
        assert row["id"].startswith("batch_req_") and row["error"] is None and row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert row["response"]["request_id"] == body["id"]
        raw = client.chat.completions.with_raw_response.create(**bodies[int(row["custom_id"].split("-")[1])])
        alone = raw.http_response.json()  # the wire body, as the batch line carries it
        assert body["choices"] == alone["choices"] and body["object"] == alone["object"] == "chat.completion"

        def cached(u: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in u.items() if k != "prompt_tokens_details"}

        assert cached(body["usage"]) == cached(alone["usage"])
    page = client.batches.list(limit=1)
    assert page.data[0].id == batch.id and page.has_more is False
    scrape = httpx.get(str(client.base_url).removesuffix("/v1/") + "/metrics").text
    assert 'llmaas_batch_lines_done_total{outcome="completed"}' in scrape and "llmaas_batch_lines_queued" in scrape


def test_embeddings_batch_matches_the_embeddings_endpoint(client: openai.OpenAI) -> None:
    texts = ["the cat", "a much longer sentence about dogs", "x"]
    data = lines("/v1/embeddings", [{"model": DEFAULT_EMBEDDING_NAME, "input": t} for t in texts], "emb")
    done = wait(client, submit(client, data, "/v1/embeddings").id, finished)
    assert done.status == "completed" and done.request_counts.completed == 3
    out = {r["custom_id"]: r["response"]["body"] for r in read_lines(client, done.output_file_id)}
    assert set(out) == {"emb-0", "emb-1", "emb-2"}
    for i, text in enumerate(texts):
        alone = client.embeddings.create(model=DEFAULT_EMBEDDING_NAME, input=text)
        got = out[f"emb-{i}"]
        assert got["usage"] == alone.usage.model_dump() and got["object"] == "list"
        assert got["data"][0]["embedding"] == pytest.approx(alone.data[0].embedding, abs=1e-5)


def test_completions_and_responses_batches(client: openai.OpenAI) -> None:
    prompt = {"model": "tiny", "prompt": "Once upon", "max_tokens": 8, "temperature": 0}
    done = wait(client, submit(client, lines("/v1/completions", [prompt]), "/v1/completions").id, finished)
    (row,) = read_lines(client, done.output_file_id)
    alone = client.completions.with_raw_response.create(**prompt).http_response.json()
    assert (
        row["response"]["body"]["choices"] == alone["choices"]
        and row["response"]["body"]["object"] == "text_completion"
    )
    ask = {"model": "tiny", "input": "Hello there", "max_output_tokens": 8, "temperature": 0}
    done = wait(client, submit(client, lines("/v1/responses", [ask]), "/v1/responses").id, finished)
    (row,) = read_lines(client, done.output_file_id)
    body = row["response"]["body"]
    assert body["object"] == "response" and body["id"].startswith("resp_")
    assert (
        client.responses.retrieve(body["id"]).output_text == client.responses.create(**ask).output_text
    )  # stored, same text


def test_a_bad_line_fails_alone_into_the_error_file(client: openai.OpenAI) -> None:
    bodies = [chat_body(0), chat_body(1, max_tokens="ten"), chat_body(2)]
    done = wait(client, submit(client, lines("/v1/chat/completions", bodies), "/v1/chat/completions").id, finished)
    assert done.status == "completed" and (done.request_counts.completed, done.request_counts.failed) == (2, 1)
    errors = read_lines(client, done.error_file_id)
    assert [r["custom_id"] for r in errors] == ["req-1"]
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["param"] == "max_tokens"
    assert sorted(r["custom_id"] for r in read_lines(client, done.output_file_id)) == ["req-0", "req-2"]


def test_an_invalid_input_file_is_refused_naming_the_line(client: openai.OpenAI) -> None:
    data = lines("/v1/chat/completions", [chat_body(0), chat_body(1)]).replace(b'"req-1"', b'"req-0"')
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("in.jsonl", data), purpose="batch")
    assert "line 2" in bad.value.message and "duplicate custom_id" in bad.value.message
    f = client.files.create(file=("in.jsonl", lines("/v1/chat/completions", [chat_body(0)])), purpose="batch")
    failed = client.batches.create(input_file_id=f.id, endpoint="/v1/embeddings", completion_window="24h")
    assert failed.status == "failed" and failed.failed_at and failed.request_counts.total == 0  # as OpenAI reports it
    assert failed.errors.data[0].line == 1 and "endpoint" in failed.errors.data[0].message  # type: ignore[union-attr]


def test_cancel_keeps_the_lines_that_finished(client: openai.OpenAI) -> None:
    bodies = [chat_body(i, max_tokens=400, ignore_eos=True) for i in range(40)]
    batch = submit(client, lines("/v1/chat/completions", bodies), "/v1/chat/completions")
    wait(client, batch.id, lambda b: b.request_counts.completed >= 2)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait(client, batch.id, finished)
    assert done.status == "cancelled" and done.cancelled_at
    out = read_lines(client, done.output_file_id)
    assert 2 <= len(out) == done.request_counts.completed < 40
    assert len({r["custom_id"] for r in out}) == len(out)


def test_past_its_window_a_batch_expires_with_partial_output(server: LlmaasProcess, client: openai.OpenAI) -> None:
    bodies = [chat_body(i, max_tokens=400, ignore_eos=True) for i in range(40)]
    batch = submit(client, lines("/v1/chat/completions", bodies), "/v1/chat/completions")
    wait(client, batch.id, lambda b: b.request_counts.completed >= 2)
    with sqlite3.connect(server.data_dir / "llmaas.db") as db:  # the 24 h window, over now
        db.execute("update batches set expires_at = 1 where id = ?", (batch.id,))
    done = wait(client, batch.id, finished)
    assert done.status == "expired" and done.expired_at and done.request_counts.total == 40
    out, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
    assert len(out) == done.request_counts.completed >= 2 and len(errors) == done.request_counts.failed == 40 - len(out)
    assert {e["error"]["code"] for e in errors} == {"batch_expired"} and all(e["response"] is None for e in errors)
    assert sorted(r["custom_id"] for r in out + errors) == sorted(f"req-{i}" for i in range(40))


def test_another_project_cannot_see_it(server: LlmaasProcess, client: openai.OpenAI) -> None:
    done = wait(
        client, submit(client, lines("/v1/chat/completions", [chat_body(0)]), "/v1/chat/completions").id, finished
    )
    admin = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/admin/projects", json={"id": "rival", "name": "Rival"}, headers=admin).status_code == 200
        created = http.post("/admin/keys", json={"project_id": "rival", "name": "r"}, headers=admin).json()
    key = created["key"]
    rival = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=30)
    assert rival.batches.list().data == []
    for call in (lambda i: rival.batches.retrieve(i), lambda i: rival.batches.cancel(i)):
        with pytest.raises(openai.NotFoundError) as theirs:
            call(done.id)
        with pytest.raises(openai.NotFoundError) as random:
            call("batch_" + "0" * 48)
        assert theirs.value.body == {
            **random.value.body,
            "message": random.value.body["message"].replace("0" * 48, done.id[6:]),
        }
    with pytest.raises(openai.NotFoundError):
        rival.files.content(done.output_file_id)  # type: ignore[arg-type]
    # The rival's own batch runs as its key: revoking the key stops the batch (its pending lines fail).
    mine = submit(
        rival,
        lines("/v1/chat/completions", [chat_body(i, max_tokens=400, ignore_eos=True) for i in range(40)]),
        "/v1/chat/completions",
    )
    wait(rival, mine.id, lambda b: b.request_counts.completed >= 1)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post(f"/admin/keys/{created['id']}/revoke", headers=admin).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = (
            sqlite3.connect(server.data_dir / "llmaas.db")
            .execute("select status, failed, errors from batches where id = ?", (mine.id,))
            .fetchone()
        )
        if row[0] == "failed":
            break
        time.sleep(0.1)
    assert row[0] == "failed" and row[1] >= 1 and "invalid_api_key" in row[2]  # read in the database: the key is gone


def test_cli_create_watch_download(server: LlmaasProcess, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from llmaas.cli import cli

    (tmp_path / "in.jsonl").write_bytes(lines("/v1/chat/completions", [chat_body(0), chat_body(1, max_tokens="x")]))
    conn = ["--base-url", server.url, "--api-key", server.api_key]
    made = CliRunner().invoke(cli, ["batches", "create", *conn, "--file", str(tmp_path / "in.jsonl"), "--watch"])
    assert made.exit_code == 0, made.output
    batch_id = made.output.splitlines()[0]
    assert batch_id.startswith("batch_") and "status: completed" in made.output
    for flag, expected in (("--results", "req-0"), ("--errors", "req-1")):
        got = CliRunner().invoke(cli, ["batches", "download", *conn, batch_id, flag, "-o", str(tmp_path / "out.jsonl")])
        assert got.exit_code == 0, got.output
        assert [json.loads(x)["custom_id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == [expected]


def test_kill_9_mid_batch_then_restart_completes_exactly_once(server: LlmaasProcess, client: openai.OpenAI) -> None:
    bodies = [chat_body(i, max_tokens=32, ignore_eos=True) for i in range(30)]
    batch = submit(client, lines("/v1/chat/completions", bodies), "/v1/chat/completions")
    wait(client, batch.id, lambda b: b.request_counts.completed >= 3)
    server.kill()  # SIGKILL to the whole group: server and engine process, mid-batch
    killed = (
        sqlite3.connect(server.data_dir / "llmaas.db")
        .execute("select count(*) from batch_lines where batch_id = ? and status != 'pending'", (batch.id,))
        .fetchone()[0]
    )
    assert 3 <= killed < 30

    again = LlmaasProcess(
        ["serve", "--config", str(server.root / "llmaas.yaml"), "--host", "127.0.0.1", "--port", "0", "--no-worker"],
        server.root,
    )  # the same settings and data dir
    try:
        again.wait_ready()
        fresh = openai.OpenAI(base_url=again.base_url, api_key=server.api_key, max_retries=0, timeout=60)
        done = wait(fresh, batch.id, finished, timeout=90)
        assert done.status == "completed" and (done.request_counts.completed, done.request_counts.failed) == (30, 0)
        out = read_lines(fresh, done.output_file_id)
        assert sorted(r["custom_id"] for r in out) == sorted(f"req-{i}" for i in range(30))  # each once, none missing
        db = sqlite3.connect(again.data_dir / "llmaas.db")
        marks = ",".join("?" * len(out))
        billed = db.execute(
            "select count(*), count(distinct request_id) from usage_records where route = ? and "
            f"request_id in ({marks})",
            ("batch:/v1/chat/completions", *[r["response"]["request_id"] for r in out]),
        ).fetchone()
        assert billed == (30, 30)  # one usage row per line, written with the line
    finally:
        again.stop()
