"""Alembic environment: runs on the connection `Store.upgrade()` hands over (or builds one from the URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

import llmaas.store.batch_models  # noqa: F401  (the Batch API's tables)
import llmaas.store.models  # noqa: F401  (registers tenancy's tables on Base.metadata)
import llmaas.store.responses_models  # noqa: F401  (the Responses API's tables)
import llmaas.store.training_models  # noqa: F401  (training's tables)
from llmaas.store.db import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
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
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic needs a connection or sqlalchemy.url (llmaas.store.db gives one)")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
