"""Tenancy end to end: `llmaas serve` with auth on, its printed admin key, the official openai client with a
project key (rate-limit headers, 429s, scopes, revocation), then usage read by the CLI after a graceful stop.
(Written by the tenancy engineer; uses the shared fixtures of tests/e2e/conftest.py.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from click.testing import CliRunner

from llmaas.cli import cli


def test_keys_limits_usage_end_to_end(
    serve_llmaas: Callable[..., Any], tiny_config: Callable[..., dict[str, Any]]
) -> None:
    server = serve_llmaas(tiny_config(default_max_tokens=8, usage_flush_s=0.2), auth=True)
    admin = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post("/admin/projects", json={"id": "acme", "name": "Acme"}, headers=admin).status_code == 200
        created = http.post(
            "/admin/keys", json={"project_id": "acme", "name": "ci", "rpm": 3, "models": ["tiny"]}, headers=admin
        ).json()
        key = created["key"]
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
        assert me["project_id"] == "acme" and me["limits"]["rpm"] == 3 and me["models"] == ["tiny"]
        assert http.get("/admin/projects", headers={"Authorization": f"Bearer {key}"}).status_code == 403

    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "3"
    assert raw.headers["x-ratelimit-remaining-requests"] == "2"
    assert raw.parse().usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError):  # not in this key's scopes (models it can't use don't exist for it)
        client.embeddings.create(model="all-MiniLM-L6-v2", input="x")
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a"}], max_tokens=2)
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "b"}], max_tokens=2)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "c"}], max_tokens=2)
    assert limited.value.code == "rate_limit_exceeded"
    assert int(limited.value.response.headers["retry-after"]) >= 1

    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert http.post(f"/admin/keys/{created['id']}/revoke", headers=admin).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.models.list()

    server.stop()  # SIGTERM: buffered usage is flushed on the way out
    env = {**os.environ, "LLMAAS_DATA_DIR": str(server.data_dir)}
    out = CliRunner().invoke(cli, ["usage", "--project", "acme", "--group-by", "key", "--json"], env=env)
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)["data"]
    assert rows[0]["group"] == created["id"] and rows[0]["requests"] >= 4 and rows[0]["completion_tokens"] > 0
    keys_out = CliRunner().invoke(cli, ["keys", "list", "--json"], env=env)
    assert sum(k["is_admin"] for k in json.loads(keys_out.stdout)) == 1
