"""Helpers shared by the test suite, never imported by the llmaas package (which must not import pytest).

`tiny` builds tiny random models on disk; `fakes` is a fake engine registry for tests above the engine; `stores`
gives real SQLite/PostgreSQL stores and Redis prefixes (and the `store` fixture, so it needs pytest); `server` starts
real `llmaas serve` processes on free ports. Imported as `tests.support.*`: pyproject.toml puts the repository root
on pytest's `pythonpath`.
"""
