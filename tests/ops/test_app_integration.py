"""The ops layer inside the real `create_app`: middleware registered, probes and metrics public."""

from __future__ import annotations

from fastapi.testclient import TestClient
from ops_helpers import FakeModels, ops_settings

from llmaas.api.app import create_app


def test_create_app_has_ops_layer() -> None:
    app = create_app(ops_settings(allowed_hosts=["testserver"]), FakeModels())
    with TestClient(app) as c:
        r = c.get("/health", headers={"X-Request-ID": "abc-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "abc-1"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/ready").status_code == 200
        m = c.get("/metrics")
        assert m.status_code == 200 and "llmaas_engine_running_sequences" in m.text
        assert 'route="/health"' in m.text
        bad = c.get("/v1/models", headers={"Host": "rebound.example"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_host"
        nf = c.get("/v1/definitely-not-a-route")
        assert nf.headers["x-request-id"]
