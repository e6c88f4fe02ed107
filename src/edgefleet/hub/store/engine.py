"""What every part of the store shares: the engine, the revision counter, errors and upserts.

Every write is one transaction. Every object write draws a new value from one global revision
counter (``next_revision``) and stores it as the object's resourceVersion, so an update that
names an older version is refused (409). The counter's row is locked until the writer commits,
so revisions are handed out in commit order: a reader that sees revision ``r`` has seen every
revision below it, which is what lets hub replicas follow each other's writes with one indexed
query (the change feed, site revisions).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from edgefleet.hub.schema import counters

AppId = tuple[str, str]
"""(tenant, app name)."""


class StoreError(Exception):
    """Base of the errors the API maps to HTTP status codes."""

    item: int | None = None
    """In a write of several objects (``ObjectStore.put_many``): the index of the one refused."""


class NotFound(StoreError):
    """No such object (404)."""


class Conflict(StoreError):
    """The write raced another or named a stale resourceVersion (409)."""


class Outcome(StrEnum):
    """What a write did."""

    CREATED = "created"
    CONFIGURED = "configured"
    UNCHANGED = "unchanged"


def utcnow() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """``value`` as a UTC-aware datetime: SQLite hands back naive ones; everything stored is
    UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    """The SQLAlchemy engine of a store URL: SQLite (WAL) or PostgreSQL through psycopg 3."""
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship for; the plain scheme is what operators write.
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


_NEXT_REVISION = (
    update(counters)
    .where(counters.c.name == "revision")
    .values(value=counters.c.value + 1)
    .returning(counters.c.value)
)


def next_revision(conn: Connection) -> int:
    """The next value of the global revision counter (locks its row until commit)."""
    value: int = conn.execute(_NEXT_REVISION).scalar_one()
    return value


def upsert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, keys: tuple[str, ...]
) -> None:
    """Insert ``rows``, or update every non-key column of those whose ``keys`` exist."""
    if not rows:
        return
    insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert_(table)
    columns = [c for c in rows[0] if c not in keys]
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys), set_={c: stmt.excluded[c] for c in columns}
    )
    conn.execute(stmt, list(rows))


def insert_missing(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, keys: tuple[str, ...]
) -> None:
    """Insert ``rows``, nothing for keys that exist: waits for a concurrent insert of the same
    key to commit."""
    if not rows:
        return
    insert_ = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert_(table).on_conflict_do_nothing(index_elements=list(keys)), list(rows))
