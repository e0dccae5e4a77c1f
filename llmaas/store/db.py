"""The database handle of llmaas: one SQLAlchemy 2 engine + sessionmaker, and Alembic migrations run in-process.

SQLite (a file in the data dir) is the embedded default; `postgresql+psycopg://…` scales out. Tables are declared on
`Base`, each next to its queries in its domain's module (`tenancy.py`, `files.py`, `training.py`, `batches.py`,
`responses.py`); the schema is only ever changed by the Alembic revisions in `migrations/`, applied by
`Store.upgrade()` (called at `llmaas serve` start and by `llmaas db upgrade`).

This module does not know any table. Calls are synchronous: async callers use `asyncio.to_thread` so the event loop
never waits on the database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Engine, Integer, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Base(DeclarativeBase):
    """Every llmaas table derives from this."""


# An auto-increment key: SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real bigint.
AutoId = BigInteger().with_variant(Integer(), "sqlite")


def now() -> int:
    """Unix seconds, the time unit of every llmaas column (OpenAI's `created`)."""
    return int(time.time())


def ping(engine: Engine) -> None:
    """One round trip (`SELECT 1`): raises when the database cannot be reached (the readiness probe)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout makes writers queue instead of failing at once.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Store:
    """Engine + sessions for one database URL.

    `schema` (PostgreSQL only) puts every table, Alembic's version table included, in that schema via `search_path`:
    tests use it to run in isolation, deployments may use it to share a database.
    """

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        self.url = url
        self.schema = schema
        connect_args: dict[str, Any] = {}
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            connect_args["check_same_thread"] = False  # sessions hop threads via asyncio.to_thread, never shared
            connect_args["timeout"] = 10
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        if schema is not None:
            if not _SCHEMA_RE.match(schema) or url.startswith("sqlite"):
                raise ValueError("schema must be a lowercase identifier and needs PostgreSQL")
            connect_args["options"] = f"-csearch_path={schema}"
        self.engine: Engine = create_engine(url, connect_args=connect_args, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Any) -> Store:
        return cls(settings.sqlalchemy_url)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @property
    def display_url(self) -> str:
        """The URL without its password (for logs and the CLI)."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits when the block ends, rolls back if it raises."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    # --- migrations ------------------------------------------------------------------------------------

    def alembic_config(self) -> Any:
        """Alembic config built in code: `script_location` is the package's own folder, so installed wheels work."""
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        """Apply every pending migration (idempotent; safe to call at each start)."""
        from alembic import command

        cfg = self.alembic_config()
        with self._sqlite_file_lock(), self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # One upgrader at a time when several replicas start together.
                conn.execute(text("SELECT pg_advisory_xact_lock(7419305)"))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    @contextmanager
    def _sqlite_file_lock(self) -> Iterator[None]:
        """SQLite DDL is not transactional under pysqlite: serialise upgrading processes with a lock file."""
        database = self.engine.url.database if self.is_sqlite else None
        if not database or database == ":memory:":
            yield
            return
        import fcntl

        with open(f"{database}.migrate.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def close(self) -> None:
        self.engine.dispose()
