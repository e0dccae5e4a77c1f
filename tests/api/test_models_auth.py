"""/v1/models and authentication: what each key sees, default-deny on every route, the public list."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from llmaas.api.app import create_app
from llmaas.api.deps import PUBLIC_PATHS, iter_routes, requires_principal
from llmaas.config import Settings


def test_models_list_and_retrieve(client: Any) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    ids = {m["id"]: m for m in body["data"]}
    assert set(ids) == {"tiny", "notemplate", "emb"}
    assert ids["tiny"] == {
        "id": "tiny",
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "llmaas",
        "kind": "chat",
        "max_model_len": 256,
        "parent": None,
    }
    assert ids["emb"]["kind"] == "embedding"
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_keys_see_their_models_only(authed_client: Any) -> None:
    a = {"Authorization": "Bearer sk-a"}
    ids = [m["id"] for m in authed_client.get("/v1/models", headers=a).json()["data"]]
    assert ids == ["tiny", "ft:tiny:proj-a:mine:ftjob-1"]
    ft = authed_client.get("/v1/models/ft:tiny:proj-a:mine:ftjob-1", headers=a).json()
    assert ft["parent"] == "tiny" and ft["owned_by"] == "proj-a"
    # a model the key may not use is "not found", never "forbidden"
    for r in [
        authed_client.get("/v1/models/emb", headers=a),
        authed_client.post("/v1/embeddings", headers=a, json={"model": "emb", "input": "x"}),
        authed_client.post(
            "/v1/chat/completions",
            headers=a,
            json={"model": "notemplate", "messages": [{"role": "user", "content": "x"}]},
        ),
    ]:
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text
    admin = {"Authorization": "Bearer sk-admin"}
    ids = [m["id"] for m in authed_client.get("/v1/models", headers=admin).json()["data"]]
    assert "ft:tiny:proj-a:mine:ftjob-1" not in ids  # another project's fine-tuned model
    r = authed_client.post(
        "/v1/chat/completions",
        headers=admin,
        json={"model": "ft:tiny:proj-a:mine:ftjob-1", "messages": [{"role": "user", "content": "x"}]},
    )
    assert r.status_code == 404


def test_missing_or_bad_key_is_401(authed_client: Any) -> None:
    for headers in [{}, {"Authorization": "Bearer sk-wrong"}, {"Authorization": "Basic abc"}]:
        for method, path in [
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/embeddings"),
            ("POST", "/v1/completions"),
        ]:
            r = authed_client.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key"
    assert authed_client.get("/health").status_code == 200


def test_every_route_is_protected_or_public(settings: Settings, registry: Any) -> None:
    """Default deny: a route that neither requires a principal nor is on the short public list fails this test."""
    app = create_app(settings, registry)
    seen = 0
    for path, dependant, route in iter_routes(app):
        seen += 1
        if requires_principal(dependant):
            assert path not in PUBLIC_PATHS or path == "/", f"{path} is both public and protected"
            continue
        assert path in PUBLIC_PATHS, f"route {path} ({type(route).__name__}) is neither authenticated nor public"
    assert seen >= 8


def test_public_routes_answer_without_a_key(authed_client: Any) -> None:
    assert authed_client.get("/health").status_code == 200
    assert authed_client.get("/openapi.json").status_code == 200


def test_lifespan_starts_and_stops_the_registry(settings: Settings, registry: Any) -> None:
    class Part:
        events: list[str] = []

        async def start(self) -> None:
            self.events.append("start")

        async def close(self) -> None:
            self.events.append("close")

    part = Part()
    with TestClient(create_app(settings, registry, components=[part])):
        assert registry.started and not registry.stopped
    assert registry.stopped and part.events == ["start", "close"]


def test_openapi_describes_the_real_schemas(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["summary"].startswith("Create a chat completion")
    schemas = spec["components"]["schemas"]
    assert "ChatCompletionRequest" in schemas and "temperature" in schemas["ChatCompletionRequest"]["properties"]
    assert schemas["ChatCompletionRequest"]["properties"]["temperature"]["anyOf"][0]["maximum"] == 2.0
    assert "400" in chat["responses"] and "ErrorResponse" in str(chat["responses"]["400"])
