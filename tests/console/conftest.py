"""Fixtures of the console's browser tests: headless Chromium (Debian's, through Playwright), a loopback server
with only the console's static files, and a screenshot into test-artifacts/console/ whenever a browser test fails.

The live `llmaas serve` fixture is in test_console_e2e.py. We never run `playwright install` (it downloads
browsers): the system Chromium at /usr/bin/chromium is used, and the tests skip with a reason if it is missing.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)  # the page fixture screenshots when the call failed


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_page(browser: Any, request: pytest.FixtureRequest, *, width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A fresh context (its own sessionStorage); screenshot on failure; uncaught page errors fail the test."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    yield page
    failed = any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
    if failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])[:120]
        try:
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        except Exception:  # a crashed page: the test's own error matters more
            pass
    context.close()
    if errors and not failed:
        pytest.fail(f"uncaught errors or CSP violations in the page: {errors}")


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from open_page(browser, request)


@pytest.fixture
def phone_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from open_page(browser, request, width=390, height=844)


def serve_in_thread(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the static console server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="session")
def static_console() -> Iterator[str]:
    """Only the console's files (no API): for the JavaScript unit tests and the sign-in error path."""
    from fastapi import FastAPI

    from llmaas.console import router

    app = FastAPI()
    app.include_router(router)
    yield from serve_in_thread(app)
