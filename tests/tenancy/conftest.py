"""The `store` fixture, run against BOTH backends: a migrated SQLite file and a fresh PostgreSQL schema."""

from tests.support.stores import store  # noqa: F401 - a fixture: importing it here offers it to these tests
