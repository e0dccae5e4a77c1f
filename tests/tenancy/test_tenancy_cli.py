"""`llmaas db|keys|projects|usage` against the database named by settings (SQLite file; PostgreSQL by URL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmaas.cli import cli
from llmaas.store.db import Store
from llmaas.tenancy import keys as tenancy_keys
from tests.support.stores import postgres_url, scratch_schema


def _env(tmp_path: Path, url: str | None) -> dict[str, str]:
    env = {"LLMAAS_DATA_DIR": str(tmp_path)}
    if url:
        env["LLMAAS_DATABASE_URL"] = url
    return env


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest):
    if request.param == "sqlite":
        yield None
        return
    url = postgres_url()
    if url is None:
        pytest.skip("no PostgreSQL server")
    with scratch_schema(url) as schema:
        yield f"{url}?options=-csearch_path%3D{schema}"  # the schema travels in the URL, as a deployment's would


def test_cli_end_to_end(tmp_path: Path, db_url: str | None) -> None:
    runner = CliRunner()
    env = _env(tmp_path, db_url)

    def ok(*args: str) -> str:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    assert "at revision" in ok("db", "upgrade")
    assert ok("db", "current").strip().startswith("000")
    ok("projects", "create", "acme", "--name", "Acme", "--rpm", "5")
    assert json.loads(ok("projects", "show", "acme"))["rpm"] == 5
    shown = json.loads(ok("projects", "set-limits", "acme", "--rpm", "none", "--budget", "1000"))
    assert shown["rpm"] is None and shown["monthly_token_budget"] == 1000
    assert "acme" in ok("projects", "list")

    secret = ok("keys", "create", "--project", "acme", "--name", "ci", "--models", "m1,m2").strip()
    assert secret.startswith("sk-") and "\n" not in secret
    admin = ok("keys", "create", "--admin").strip()
    listing = json.loads(ok("keys", "list", "--json"))
    assert {k["prefix"] for k in listing} == {secret[:12], admin[:12]}
    assert secret not in ok("keys", "list") and secret not in json.dumps(listing)
    ci = next(k for k in listing if k["name"] == "ci")
    assert ci["models"] == ["m1", "m2"]
    limits = json.loads(ok("keys", "set-limits", ci["id"], "--rpm", "9", "--budget", "none"))
    assert limits["rpm"] == 9 and limits["monthly_token_budget"] is None and "key_hash" not in limits
    ok("keys", "revoke", ci["id"])
    assert "revoked" in ok("keys", "list", "--project", "acme")
    bad = runner.invoke(cli, ["keys", "revoke", "key-'; drop table api_keys"], env=env)
    assert bad.exit_code != 0 and "Traceback" not in bad.output
    bad = runner.invoke(cli, ["keys", "create", "--project", "nope"], env=env)
    assert bad.exit_code != 0 and "No project" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(cli, ["projects", "show", "nope"], env=env)
    assert bad.exit_code != 0 and "No project" in bad.output

    usage = json.loads(ok("usage", "--project", "acme", "--json", "--group-by", "day", "--start", "2026-01-01"))
    assert usage == {"object": "list", "data": []}
    assert "requests" in ok("usage")


def test_bootstrap_then_cli_admin_key_count(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'llmaas.db'}")
    store.upgrade()
    assert tenancy_keys.bootstrap(store) is not None
    store.close()
    out = CliRunner().invoke(cli, ["keys", "list", "--json"], env=_env(tmp_path, None)).stdout
    assert [k["name"] for k in json.loads(out)] == [tenancy_keys.BOOTSTRAP_KEY_NAME]
