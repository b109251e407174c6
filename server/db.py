"""Database engine and the UTC datetime column type.

SQLite drops tzinfo on the way in and returns naive datetimes; PostgreSQL returns
aware ones in the session time zone. ``UTCDateTime`` makes both behave the same:
only aware datetimes go in, and every datetime comes back aware and in UTC, so no
code downstream ever has to guess whether 05:00 means Hà Nội or Greenwich.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Inspector, Table, event, inspect, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, SQLModel, create_engine

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
    """Create missing tables (migrations arrive with Alembic; this is the bootstrap)."""
    import server.alerts.models
    import server.audit.models
    import server.auth.models
    import server.health.models
    import server.models
    import server.programmes.models
    import server.reports.planned
    import server.tts.models  # noqa: F401  (each import registers its tables on the metadata)

    SQLModel.metadata.create_all(engine)
    add_missing_columns(engine)
    add_missing_unique_indexes(engine)


def _existing_tables(inspector: Inspector) -> list[Table]:
    """The declared tables the database already has (an older version created them)."""
    existing = set(inspector.get_table_names())
    return [t for t in SQLModel.metadata.sorted_tables if t.name in existing]


def add_missing_columns(engine: Engine) -> list[str]:
    """Add columns that newer code declares to tables an older version created.

    The one schema change this bootstrap can make safely: a new *nullable* column (all
    new columns so far are), with its index or unique index. Existing rows keep every
    value and read the new column as NULL. Anything else (a new NOT NULL column, a type
    change) refuses to start with a clear message instead of failing on the first query.
    Returns ``table.column`` for each column added.
    """
    added: list[str] = []
    with engine.begin() as connection:
        inspector = inspect(connection)
        for table in _existing_tables(inspector):
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                if not column.nullable:
                    raise RuntimeError(
                        f"table {table.name!r} lacks the NOT NULL column {column.name!r}: "
                        "this database needs a migration this version cannot make"
                    )
                kind = column.type.compile(dialect=engine.dialect)
                connection.execute(
                    text(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')
                )
                if column.unique or column.index:
                    unique = "UNIQUE " if column.unique else ""
                    connection.execute(
                        text(
                            f'CREATE {unique}INDEX "ix_{table.name}_{column.name}" '
                            f'ON "{table.name}" ("{column.name}")'
                        )
                    )
                added.append(f"{table.name}.{column.name}")
    if added:
        log.warning("added columns to an existing database: %s", ", ".join(added))
    return added


def add_missing_unique_indexes(engine: Engine) -> list[str]:
    """Create the unique indexes newer code declares (``__table_args__``) on older tables.

    A unique index is a promise the database keeps (one alert per CAP message); an older
    table whose rows already break it refuses to start, naming the index, rather than
    run without the promise. Returns the names of the indexes created.
    """
    created: list[str] = []
    with engine.begin() as connection:
        inspector = inspect(connection)
        for table in _existing_tables(inspector):
            present = {i["name"] for i in inspector.get_indexes(table.name)}
            for index in table.indexes:
                if not index.unique or index.name in present:
                    continue
                try:
                    with connection.begin_nested():
                        index.create(connection)
                except IntegrityError as exc:
                    columns = ", ".join(c.name for c in index.columns)
                    raise RuntimeError(
                        f"table {table.name!r} has rows that repeat ({columns}), so the "
                        f"unique index {index.name!r} cannot be created; remove the "
                        "duplicates, then start again"
                    ) from exc
                created.append(str(index.name))
    if created:
        log.warning("added unique indexes to an existing database: %s", ", ".join(created))
    return created


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
