"""Alembic environment: runs on the connection `Store.upgrade()` hands over (or builds one from the URL)."""

from __future__ import annotations

import contextlib

from alembic import context
from sqlalchemy import create_engine

import llmaas.store.models  # noqa: F401  (registers tenancy's tables on Base.metadata)
from llmaas.store.db import Base

with contextlib.suppress(ModuleNotFoundError):
    import llmaas.store.training_models  # noqa: F401  (training's tables, once that module exists)
import llmaas.store.responses_models  # noqa: F401  (the Responses API's tables)
import llmaas.store.batch_models  # noqa: F401  (the Batch API's tables)

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE needs copy-and-move
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
