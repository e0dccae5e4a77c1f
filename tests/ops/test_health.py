"""/health is alive; /ready is 503 without models, with an unreachable database, or while draining."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from ops_helpers import build_app

from llmaas.api.routes.health import mark_draining


def test_health_and_ready(client: Any) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_not_ready_while_draining(app: Any) -> None:
    with TestClient(app) as c:
        mark_draining(app)
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["checks"]["shutdown"] == "draining"
        assert c.get("/health").status_code == 200  # alive: the liveness probe must not kill a draining pod


def test_not_ready_without_models() -> None:
    app = build_app()
    app.state.models = None
    with TestClient(app) as c:
        assert c.get("/ready").status_code == 503


def test_database_checked(tmp_path: Any) -> None:
    from sqlalchemy import create_engine

    class S:
        engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")

    class Broken:
        engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})

    app = build_app()
    with TestClient(app) as c:
        app.state.store = S()
        assert c.get("/ready").json()["checks"]["database"] == "ok"
        app.state.store = Broken()
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["checks"]["database"] == "unreachable"
        assert "127.0.0.1" not in r.text
