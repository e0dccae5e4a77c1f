"""Fixtures of the console's browser tests: headless Chromium (Debian's, through Playwright), a loopback server
with only the console's static files, and a screenshot into test-artifacts/console/ whenever a browser test fails.

The live `llmaas serve` fixture is in test_console_e2e.py. We never run `playwright install` (it downloads
browsers): the system Chromium at /usr/bin/chromium is used, and the tests skip with a reason if it is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from console_browser import CHROMIUM, CHROMIUM_ARGS, open_page, serve_in_thread


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)  # the page fixture screenshots when the call failed


# Module scope, not session: Playwright's sync API keeps an event loop running in the main thread while it is open,
# and every later test calling asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from open_page(browser, request)


@pytest.fixture
def phone_page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    yield from open_page(browser, request, width=390, height=844)


@pytest.fixture(scope="session")
def static_console() -> Iterator[str]:
    """Only the console's files (no API): for the JavaScript unit tests and the sign-in error path."""
    from fastapi import FastAPI

    from llmaas.console import router

    app = FastAPI()
    app.include_router(router)
    yield from serve_in_thread(app)
