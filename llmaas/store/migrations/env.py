"""Alembic environment: runs on the connection `Store.upgrade()` hands over (or builds one from the URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

# every module that declares tables, so Base.metadata holds them all
import llmaas.store.batches  # noqa: F401
import llmaas.store.files  # noqa: F401
import llmaas.store.responses  # noqa: F401
import llmaas.store.tenancy  # noqa: F401
import llmaas.store.training  # noqa: F401
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
