"""The console router and its static assets: headers, lookup by exact name, and hygiene rules checked on the files.

No browser here (see test_js.py and test_console_e2e.py for that); these run in milliseconds.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from llmaas.console import PUBLIC_PATHS, router
from llmaas.console.router import CONTENT_SECURITY_POLICY, STATIC_DIR, assets


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.include_router(router)
    return TestClient(app)


def test_page_and_assets_carry_a_strict_csp(client: TestClient) -> None:
    for path, media in [
        ("/", "text/html"),
        ("/console/js/app.js", "text/javascript"),
        ("/console/style.css", "text/css"),
        ("/console/favicon.svg", "image/svg+xml"),
    ]:
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-type"].startswith(media)
        csp = resp.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in resp.headers


@pytest.mark.parametrize(
    "path",
    [
        "/console/nope.js",
        "/console/../router.py",
        "/console/%2e%2e/router.py",
        "/console/..%2frouter.py",
        "/console//etc/passwd",
        "/console/js/../../router.py",
        "/console/",
        "/console/js",
    ],
)
def test_only_shipped_files_by_exact_name(client: TestClient, path: str) -> None:
    resp = client.get(path)
    assert resp.status_code == 404
    assert "import" not in resp.text and "router" not in resp.text  # no file content, the path not echoed


def test_unknown_asset_answer_is_plain_and_protected(client: TestClient) -> None:
    resp = client.get("/console/%3Cscript%3E.js")
    assert (resp.status_code, resp.text) == (404, "Not found")
    assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_public_paths_name_the_routes() -> None:
    assert {r.path for r in router.routes} == set(PUBLIC_PATHS)


# --- hygiene of the shipped files -------------------------------------------------------------------------


def _texts() -> dict[str, str]:
    return {name: body.decode() for name, (body, media) in assets().items() if not media.startswith("image/png")}


def test_no_html_sinks_or_eval_in_scripts() -> None:
    banned = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\s*[\"']on"
    )
    for name, text in _texts().items():
        if name.endswith(".js"):
            code = re.sub(r"^\s*//.*$", "", text, flags=re.M)  # comments may name what is not done
            assert not banned.search(code), f"{name}: builds HTML from strings or evaluates code"


def test_nothing_loads_from_another_origin() -> None:
    url = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}""", re.I)
    for name, text in _texts().items():
        found = [u for u in url.findall(text) if u != "http://www.w3.org"]  # the SVG namespace is a name, not a fetch
        assert not found, f"{name} refers to another origin: {found}"
        assert "@import" not in text and "fonts.googleapis" not in text


def test_page_has_no_inline_script_or_handlers() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S):
        assert not tag.strip(), "inline script (blocked by the CSP anyway)"
    assert not re.search(r"\son[a-z]+\s*=", html) and " style=" not in html


def test_every_reference_resolves_to_a_shipped_file() -> None:
    names = set(assets())
    html = (STATIC_DIR / "index.html").read_text()
    for ref in re.findall(r"""(?:src|href)="/console/([^"]+)\"""", html):
        assert ref in names, ref
    for name, text in _texts().items():
        if not name.endswith(".js"):
            continue
        base = name.rsplit("/", 1)[0] if "/" in name else ""
        for ref in re.findall(r"""^import\b[^"']*["']([^"']+)["']""", text, re.M):
            parts = (base.split("/") if base else []) + ref.split("/")
            out: list[str] = []
            for p in parts:
                if p == "..":
                    out.pop()
                elif p not in (".", ""):
                    out.append(p)
            assert "/".join(out) in names, f"{name} imports {ref}"


def test_files_stay_small_and_documented() -> None:
    for name, text in _texts().items():
        assert text.count("\n") <= 400, f"{name} is over 400 lines"
        if name.endswith((".js", ".css")):
            assert text.lstrip().startswith(("//", "/*")), f"{name} should start with a comment saying what it is"


def test_served_by_the_app_without_a_key() -> None:
    """In the real app (auth on), the console's files need no key and keep their own CSP; the API still does."""
    app_module = pytest.importorskip("llmaas.api.app", reason="llmaas.api.app is not written yet")
    from llmaas.config import Settings
    from llmaas.errors import Unauthenticated

    class DenyAll:
        async def authenticate(self, authorization: str | None) -> None:
            raise Unauthenticated("no key")

    app = app_module.create_app(Settings(), models=None, auth=DenyAll())
    client = TestClient(app)  # no `with`: the lifespan (model loading) never runs
    for path in ("/", "/console/js/app.js"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert client.get("/console/nope.js").status_code == 404
    if any(getattr(r, "path", "") == "/v1/models" for r in app.routes):
        assert client.get("/v1/models").status_code == 401
