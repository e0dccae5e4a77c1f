"""Fixtures of the ops tests (helpers live in ops_helpers.py, importable because tests/ops has no __init__)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from ops_helpers import build_app


@pytest.fixture
def app() -> FastAPI:
    return build_app()


@pytest.fixture
def client(app: FastAPI) -> Any:
    from fastapi.testclient import TestClient

    with TestClient(app) as c:
        yield c
