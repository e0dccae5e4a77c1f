"""Files and fine-tuning endpoints in-process, driven by the official `openai` client: shapes, errors, isolation."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from llmaas.api.app import create_app
from llmaas.config import Settings
from llmaas.errors import ModelNotFound, Unauthenticated
from llmaas.store.db import Store
from llmaas.store.files import display_name
from llmaas.tenancy.types import Principal
from llmaas.training.registry import FineTunedModels

from .conftest import fact_examples, jsonl


class NoModels:
    """A registry with no engines: files and jobs never touch one."""

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def list(self) -> list[Any]:
        return []

    def chat(self, name: str) -> Any:
        raise ModelNotFound(name)

    def stats(self) -> dict[str, Any]:
        return {}


class TwoProjects:
    keys = {
        "Bearer key-a": Principal(project_id="proj-a", key_id="a"),
        "Bearer key-b": Principal(project_id="proj-b", key_id="b"),
    }

    async def authenticate(self, authorization: str | None) -> Principal:
        if authorization not in self.keys:
            raise Unauthenticated("bad key")
        return self.keys[authorization]


@pytest.fixture
def http(sqlite_db: Store, settings: Settings) -> Iterator[TestClient]:
    settings = settings.model_copy(update={"limits": settings.limits.model_copy(update={"max_upload_bytes": 4096})})
    app = create_app(
        settings,
        NoModels(),
        auth=TwoProjects(),
        store=sqlite_db,
        finetuned=FineTunedModels.from_settings(settings, sqlite_db),
    )
    with TestClient(app) as client:
        yield client


def client_for(http: TestClient, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)


def test_files_roundtrip_with_the_openai_client(http: TestClient, settings: Settings) -> None:
    a = client_for(http, "key-a")
    data = jsonl(fact_examples(3))
    f = a.files.create(file=("../../etc/passwd.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert f.object == "file" and f.bytes == len(data) and f.purpose == "fine-tune" and f.status == "processed"
    assert f.filename == "passwd.jsonl"  # display text: the last path component only
    assert display_name("a\\b\x00\x1fc\n") == "bc" and display_name("") == "upload"
    stored = list(Path(settings.data_dir, "files").rglob("*"))
    assert [p.name for p in stored] == [f.id]  # stored under the server's id only
    assert a.files.retrieve(f.id).id == f.id
    assert a.files.content(f.id).content == data
    line = b'{"custom_id": "1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}'
    g = a.files.create(file=("b.jsonl", io.BytesIO(line)), purpose="batch")  # batch files are validated (issue 17)
    assert [x.id for x in a.files.list()] == [g.id, f.id]
    assert [x.id for x in a.files.list(purpose="batch")] == [g.id]
    assert a.files.delete(g.id).deleted
    with pytest.raises(openai.NotFoundError):
        a.files.retrieve(g.id)


def test_other_projects_files_and_jobs_are_404(http: TestClient) -> None:
    a, b = client_for(http, "key-a"), client_for(http, "key-b")
    f = a.files.create(file=("a.jsonl", io.BytesIO(jsonl(fact_examples(2)))), purpose="fine-tune")
    job = a.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    for call in (
        lambda: b.files.retrieve(f.id),
        lambda: b.files.content(f.id),
        lambda: b.files.delete(f.id),
        lambda: b.fine_tuning.jobs.retrieve(job.id),
        lambda: b.fine_tuning.jobs.cancel(job.id),
        lambda: b.fine_tuning.jobs.list_events(job.id),
        lambda: b.fine_tuning.jobs.checkpoints.list(job.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert b.files.list().data == [] and b.fine_tuning.jobs.list().data == []
    with pytest.raises(openai.BadRequestError) as info:  # b cannot train on a's file either
        b.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    assert info.value.body["param"] == "training_file"


def test_upload_limits_and_bad_requests(http: TestClient) -> None:
    a = client_for(http, "key-a")
    with pytest.raises(openai.APIStatusError) as info:
        a.files.create(file=("big.jsonl", io.BytesIO(b"x" * 10_000)), purpose="fine-tune")
    assert info.value.status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: the cap applies while the body streams
        yield b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
        for _ in range(100):
            yield b"y" * 1000
        yield b"\r\n--B--\r\n"

    r = http.post(
        "/v1/files",
        content=chunked(),
        headers={"Authorization": "Bearer key-a", "Content-Type": "multipart/form-data; boundary=B"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    with pytest.raises(openai.BadRequestError) as bad:
        a.files.create(file=("a.jsonl", io.BytesIO(b"{}")), purpose="homework")  # type: ignore[arg-type]
    assert bad.value.body["param"] == "purpose"
    r = http.post("/v1/files", json={"purpose": "fine-tune"}, headers={"Authorization": "Bearer key-a"})
    assert r.status_code == 400
    assert http.get("/v1/files").status_code == 401


def test_job_creation_validates_and_shapes(http: TestClient) -> None:
    a = client_for(http, "key-a")
    f = a.files.create(file=("a.jsonl", io.BytesIO(jsonl(fact_examples(2)))), purpose="fine-tune")
    line = b'{"custom_id": "1", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}'
    batch = a.files.create(file=("b.jsonl", io.BytesIO(line)), purpose="batch")
    bad: list[tuple[dict[str, Any], str]] = [
        ({"model": "gpt-9", "training_file": f.id}, "model"),
        ({"model": "tiny", "training_file": "file-nope"}, "training_file"),
        ({"model": "tiny", "training_file": batch.id}, "training_file"),
        ({"model": "tiny", "training_file": f.id, "hyperparameters": {"n_epochs": 10_000}}, "hyperparameters.n_epochs"),
        (
            {"model": "tiny", "training_file": f.id, "hyperparameters": {"learning_rate_multiplier": -1}},
            "hyperparameters.learning_rate_multiplier",
        ),
        (
            {"model": "tiny", "training_file": f.id, "method": {"type": "supervised", "lora": {"rank": 100_000}}},
            "method.lora.rank",
        ),
        (
            {
                "model": "tiny",
                "training_file": f.id,
                "method": {"type": "supervised", "lora": {"target_modules": ["../x"]}},
            },
            "method.lora.target_modules[0]",
        ),
        ({"model": "tiny", "training_file": f.id, "suffix": "a/b"}, "suffix"),
        ({"model": "tiny", "training_file": f.id, "method": {"type": "reinforcement"}}, "method.type"),
        (
            {
                "model": "tiny",
                "training_file": f.id,
                "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}},
            },
            "method.dpo.hyperparameters.beta",
        ),
    ]
    for body, param in bad:
        r = http.post("/v1/fine_tuning/jobs", json=body, headers={"Authorization": "Bearer key-a"})
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param, (body, r.json())

    job = a.fine_tuning.jobs.create(
        model="tiny",
        training_file=f.id,
        suffix="mine",
        seed=7,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto"}},
            "lora": {"rank": 4},
        },  # type: ignore[typeddict-unknown-key]
    )
    assert job.object == "fine_tuning.job" and job.status == "validating_files" and job.seed == 7
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 4
    assert job.fine_tuned_model is None and job.error is None and job.user_provided_suffix == "mine"
    raw = http.get(f"/v1/fine_tuning/jobs/{job.id}", headers={"Authorization": "Bearer key-a"}).json()
    assert raw["method"]["lora"]["rank"] == 4 and raw["method"]["lora"]["alpha"] == 16
    jobs = [a.fine_tuning.jobs.create(model="tiny", training_file=f.id) for _ in range(3)]
    page = a.fine_tuning.jobs.list(limit=2)
    assert [j.id for j in page.data] == [jobs[2].id, jobs[1].id] and page.has_more
    rest = a.fine_tuning.jobs.list(limit=10, after=jobs[1].id)
    assert [j.id for j in rest.data] == [jobs[0].id, job.id] and not rest.has_more
    cancelled = a.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert a.fine_tuning.jobs.cancel(job.id).status == "cancelled"  # idempotent; a succeeded job: 400 (test_jobs)
    events = a.fine_tuning.jobs.list_events(job.id)
    assert [e.message for e in events.data] == ["Fine-tuning job cancelled", f"Created fine-tuning job: {job.id}"]
    assert events.data[0].object == "fine_tuning.job.event"
    assert a.fine_tuning.jobs.checkpoints.list(job.id).data == []


def test_dpo_and_reinforcement_methods(http: TestClient) -> None:
    a = client_for(http, "key-a")
    f = a.files.create(file=("a.jsonl", io.BytesIO(jsonl(fact_examples(2)))), purpose="fine-tune")
    r = http.post(
        "/v1/fine_tuning/jobs",
        json={"model": "tiny", "training_file": f.id, "method": {"type": "reinforcement"}},
        headers={"Authorization": "Bearer key-a"},
    )
    assert "'reinforcement' is not supported" in r.json()["error"]["message"]
    dpo = a.fine_tuning.jobs.create(
        model="tiny",
        training_file=f.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}},
    )
    assert dpo.method is not None and dpo.method.type == "dpo" and dpo.method.dpo is not None
    assert dpo.method.dpo.hyperparameters is not None and dpo.method.dpo.hyperparameters.beta == 0.2
    assert dpo.hyperparameters.n_epochs == 1 and dpo.result_files == []
    auto = a.fine_tuning.jobs.create(model="tiny", training_file=f.id)
    assert auto.hyperparameters.n_epochs == "auto"  # until the worker has counted the file
    # the adapter download: only a succeeded job has one; another project's job is not found
    r = http.get(f"/v1/fine_tuning/jobs/{auto.id}/adapter", headers={"Authorization": "Bearer key-a"})
    assert (
        r.status_code == 400
        and "no adapter" in r.json()["error"]["message"]
        and r.json()["error"]["param"] == "fine_tuning_job_id"
    )
    r = http.get(f"/v1/fine_tuning/jobs/{auto.id}/adapter", headers={"Authorization": "Bearer key-b"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# --- issue 14: the upload cap, downloads, JSON types (lone surrogates in files: test_files.py) -----------------------------------


def exact_jsonl(size: int) -> bytes:
    """A valid one-example JSONL file of exactly `size` bytes."""
    head, tail = b'{"prompt": "', b'", "completion": "ok"}\n'
    return head + b"p" * (size - len(head) - len(tail)) + tail


def test_the_upload_cap_counts_the_files_own_bytes(http: TestClient) -> None:
    a = client_for(http, "key-a")  # max_upload_bytes = 4096 (the fixture)
    f = a.files.create(file=("exact.jsonl", io.BytesIO(exact_jsonl(4096))), purpose="fine-tune")
    assert f.bytes == 4096  # exactly the cap: accepted, whatever the multipart framing adds
    with pytest.raises(openai.APIStatusError) as info:
        a.files.create(file=("over.jsonl", io.BytesIO(exact_jsonl(4097))), purpose="fine-tune")
    assert info.value.status_code == 413 and "4096" in info.value.message


def test_downloads_are_attachments(http: TestClient) -> None:
    a = client_for(http, "key-a")
    f = a.files.create(file=('x"; evil=1.jsonl', io.BytesIO(jsonl(fact_examples(1)))), purpose="fine-tune")
    r = http.get(f"/v1/files/{f.id}/content", headers={"Authorization": "Bearer key-a"})
    assert r.status_code == 200
    assert r.headers["content-disposition"] == f'attachment; filename="{f.id}.jsonl"'  # our id, never the client's name
    assert r.headers["content-type"] == "application/octet-stream" and r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"seed": True}, "seed"),
        ({"hyperparameters": {"n_epochs": True}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"batch_size": "4"}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"n_epochs": 2.0}}, "hyperparameters.n_epochs"),
        ({"hyperparameters": {"learning_rate_multiplier": False}}, "hyperparameters.learning_rate_multiplier"),
        ({"method": {"type": "supervised", "lora": {"rank": 8.0}}}, "method.lora.rank"),
        ({"method": {"type": "supervised", "lora": {"dropout": "0.1"}}}, "method.lora.dropout"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": True}}}},
            "method.supervised.hyperparameters.batch_size",
        ),
    ],
)
def test_job_numbers_are_strict_json_types(http: TestClient, extra: dict[str, Any], param: str) -> None:
    r = http.post(
        "/v1/fine_tuning/jobs",
        json={"model": "tiny", "training_file": "file-x", **extra},
        headers={"Authorization": "Bearer key-a"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


@pytest.mark.parametrize("body", [b"not json", b"[1]", b"null", b'{"model": ', b"{\xff}", b'{"model": "\\ud800"}'])
def test_malformed_job_bodies_are_openai_400s(http: TestClient, body: bytes) -> None:
    for path in ["/v1/fine_tuning/jobs", "/v1/files"]:
        r = http.post(path, content=body, headers={"Authorization": "Bearer key-a", "Content-Type": "application/json"})
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}, (path, r.text)


def test_multipart_charsets_other_than_utf8_are_refused(http: TestClient) -> None:
    # The form parser decodes with the client's charset; unicode_escape would turn b"\\ud800" into a lone surrogate.
    body = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a\\ud800b"\r\n\r\n{"prompt":"a","completion":"b"}\n\r\n--B--\r\n'
    )
    for charset, status in [
        ("unicode_escape", 400),
        ("raw_unicode_escape", 400),
        ("utf-16", 400),
        ("utf-8", 200),
        ('"UTF-8"', 200),
    ]:
        r = http.post(
            "/v1/files",
            content=body,
            headers={
                "Authorization": "Bearer key-a",
                "Content-Type": f"multipart/form-data; boundary=B; charset={charset}",
            },
        )
        assert r.status_code == status, (charset, r.text)
        if status == 400:
            assert r.json()["error"]["param"] == "file"
    assert display_name("a\ud800b\udfff") == "ab"  # and a filename that is not text never reaches the database


def test_a_mistyped_union_field_names_the_type(http: TestClient) -> None:
    body = {"model": "tiny", "training_file": "file-x", "hyperparameters": {"n_epochs": "3"}}
    r = http.post("/v1/fine_tuning/jobs", json=body, headers={"Authorization": "Bearer key-a"})
    e = r.json()["error"]
    assert r.status_code == 400 and e["param"] == "hyperparameters.n_epochs" and "integer" in e["message"], e
