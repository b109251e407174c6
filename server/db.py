"""Database engine and the UTC datetime column type.

SQLite drops tzinfo on the way in and returns naive datetimes; PostgreSQL returns
aware ones in the session time zone. ``UTCDateTime`` makes both behave the same:
only aware datetimes go in, and every datetime comes back aware and in UTC, so no
code downstream ever has to guess whether 05:00 means Hà Nội or Greenwich.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, Table, event
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

log = logging.getLogger(__name__)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            # Refuse rather than assume: a naive value is a bug in our code.
            raise ValueError(f"naive datetime {value.isoformat()} cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """The one wall clock of the server; code that must be testable takes ``now``."""
    return datetime.now(UTC)


def make_engine(url: str) -> Engine:
    """An engine for SQLite (file or memory) or any server database URL.

    SQLite gets WAL and a busy timeout because the API threads and the fleet ingest
    worker write concurrently; an in-memory database gets a single shared connection
    so every session sees the same data.
    """
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        if ":memory:" in url or url in {"sqlite://", "sqlite:///"}:
            kwargs["poolclass"] = StaticPool
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_tables(engine: Engine) -> None:
    """Bring an empty database to this version's schema; refuse one that is not current.

    The schema comes from the migrations (``server.schema``), never from the models
    directly, so a fresh install and an upgraded one are the same database. Replicas
    starting together on an empty PostgreSQL migrate it one at a time (advisory lock).
    """
    from server.cluster.leader import SCHEMA_LOCK_KEY, held
    from server.schema import ensure_current  # the migrations import this module

    with held(engine, SCHEMA_LOCK_KEY):
        ensure_current(engine)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def append_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Insert many rows in one driver call: COPY on PostgreSQL, executemany elsewhere.

    For thousands of small rows (a province-wide broadcast's targets) SQLAlchemy's per-row parameter
    handling costs more than the database's own work; here each value goes through its
    column type's bind processor and the rows reach the driver as they are. Every
    column without a database default must be among ``columns``.
    """
    dialect = connection.dialect
    names = ", ".join(columns)
    if dialect.name == "postgresql":
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    processors = [table.c[name].type._cached_bind_processor(dialect) for name in columns]
    values = [
        tuple(v if p is None or v is None else p(v) for p, v in zip(processors, row, strict=True))
        for row in rows
    ]
    marks = ", ".join("?" for _ in columns)
    connection.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", values)
