"""Scale-out on loopback: two `llmaas serve` replicas sharing one PostgreSQL database, one Redis and one file store,
plus one `llmaas worker`, behave as one service.

- a key created through replica A works on replica B;
- rate limits are global (requests on A and B count against one window in Redis);
- a file uploaded to A is visible (metadata and content) on B;
- a fine-tuning job created on A is trained by the worker, and its model is served by A and by B;
- /metrics on each replica counts that traffic with bounded labels and the jobs from the shared database.

The database is a fresh PostgreSQL database per test, dropped afterwards; the rate-limited project has a random id,
so other runs sharing the Redis server never collide with it.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import LlmaasProcess, serve

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
TRAIN_TIMEOUT_S = 600


@pytest.fixture
def database_url() -> Iterator[str]:
    from tests.support.stores import postgres_url, redis_available, scratch_database

    base = postgres_url()
    if base is None or not redis_available():
        pytest.fail("scale-out needs PostgreSQL at 127.0.0.1:5432 and Redis at 127.0.0.1:6379 (scripts/services.sh)")
    with scratch_database(base, "llmaas_scale") as url:
        yield url


def cli(root: Path, env: dict[str, str], *args: str) -> str:
    import os
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "llmaas", *args],
        cwd=root,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def training_jsonl() -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
        for w in ("red", "green", "blue", "cyan")
    ]
    return "\n".join(json.dumps(r) for r in rows).encode()


def test_two_replicas_one_worker_behave_as_one_service(tmp_path: Path, tiny_model_dir: Path, database_url: str) -> None:
    shared = {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "files_url": str(tmp_path / "shared-files"),
        "models": [{"name": "tiny", "source": str(tiny_model_dir), "kind": "chat", "kv_cache_mb": 16}],
        "start_worker": False,
        "worker_poll_s": 0.2,
    }
    env = {"LLMAAS_DATABASE_URL": database_url, "LLMAAS_DATA_DIR": str(tmp_path / "cli")}
    cli(tmp_path, env, "db", "upgrade")
    out = cli(tmp_path, env, "keys", "create", "--admin", "--project", "default", "--name", "ops-admin")
    admin_key = next(tok for tok in out.split() if tok.startswith("sk-"))

    procs: list[LlmaasProcess] = []
    try:
        a = serve(tmp_path / "a", shared, wait=False)
        b = serve(tmp_path / "b", shared, wait=False)
        procs += [a, b]
        ready = [threading.Thread(target=p.wait_ready) for p in (a, b)]
        for t in ready:
            t.start()
        for t in ready:
            t.join()
        for p in (a, b):
            assert httpx.get(f"{p.url}/ready", timeout=10).status_code == 200, p.output
        A = httpx.Client(base_url=a.url or "", timeout=120, headers={"Authorization": f"Bearer {admin_key}"})
        B = httpx.Client(base_url=b.url or "", timeout=120, headers={"Authorization": f"Bearer {admin_key}"})

        # --- a key created through A works on B
        project = f"so-{secrets.token_hex(4)}"
        r = A.post("/admin/projects", json={"id": project, "name": "scale-out", "rpm": 3})
        assert r.status_code in (200, 201), r.text
        r = A.post("/admin/keys", json={"project_id": project, "name": "tenant"})
        assert r.status_code in (200, 201), r.text
        tenant_key = r.json()["key"]
        tenant = {"Authorization": f"Bearer {tenant_key}"}
        assert B.get("/v1/models", headers=tenant).status_code == 200

        # --- rate limits are global: 3 requests per minute for the project, spread over both replicas
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
        codes = [c.post("/v1/chat/completions", json=chat, headers=tenant).status_code for c in (A, B, A, B)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429, codes

        # --- a file uploaded to A is visible on B
        data = training_jsonl()
        r = A.post(
            "/v1/files", files={"file": ("train.jsonl", data, "application/jsonl")}, data={"purpose": "fine-tune"}
        )
        assert r.status_code == 200, r.text
        file_id = r.json()["id"]
        assert B.get(f"/v1/files/{file_id}").json()["id"] == file_id
        assert B.get(f"/v1/files/{file_id}/content").content == data

        # --- a fine-tune created on A is trained by the worker; both replicas serve its model
        r = A.post(
            "/v1/fine_tuning/jobs",
            json={
                "model": "tiny",
                "training_file": file_id,
                "suffix": "so",
                "hyperparameters": {"n_epochs": 1, "batch_size": 2},
            },
        )
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        worker_cfg = tmp_path / "worker.yaml"
        worker_cfg.write_text(json.dumps({**shared, "data_dir": str(tmp_path / "w")}))  # JSON is YAML
        worker = LlmaasProcess(["worker", "--config", str(worker_cfg)], tmp_path)
        procs.append(worker)
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = B.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            if job.get("status") in ("succeeded", "failed", "cancelled"):
                break
            assert worker.proc.poll() is None, worker.output
            time.sleep(1)
        assert job.get("status") == "succeeded", f"{job}\n{worker.output}"
        model = job["fine_tuned_model"]
        assert model.startswith("ft:tiny:")
        for client in (A, B):
            assert model in [m["id"] for m in client.get("/v1/models").json()["data"]]
            r = client.post("/v1/chat/completions", json={**chat, "model": model, "max_tokens": 4})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == model

        # --- each replica's /metrics: fine-tuned traffic pooled under one label, jobs counted from PostgreSQL
        text = httpx.get(f"{a.url}/metrics", timeout=30).text
        assert 'llmaas_fine_tuning_jobs{status="succeeded"} 1.0' in text
        assert 'llmaas_requests_total{model="fine_tuned",route="/v1/chat/completions",status="200"} 1.0' in text
        assert 'llmaas_rate_limit_rejections_total{reason="rate_limit_exceeded"}' in httpx.get(f"{b.url}/metrics").text
        assert job_id not in text and model not in text, "ids and fine-tuned model names never become labels"

        # --- logs: an access line per request, but never a key or the content of prompts and training data
        logs = "\n".join(line for p in procs for line in p.lines)
        assert '"route": "/v1/chat/completions"' in logs or "POST /v1/chat/completions 200" in logs
        for secret in (tenant_key, admin_key, "Say cyan"):
            assert secret not in logs
    finally:
        for p in procs:
            p.kill()
