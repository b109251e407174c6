"""The database schema's version, kept by Alembic migrations.

A province upgrades Loaxa without losing a row, so the schema is never guessed from the
models at start-up: ``loaxa db upgrade`` applies the migrations in ``server/migrations``,
and the server refuses to start on a database that is behind (or ahead of) its code,
naming the command to run. An empty database is the one exception: a first start
migrates it to the newest revision, so a fresh install needs no extra step.

Databases made by the release of 2026-11-25 (before migrations) carry every table of the
baseline revision but no ``alembic_version``; ``upgrade`` adopts them by stamping the
baseline and migrating on from there, keeping every row.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect
from sqlmodel import SQLModel

import server
from loaxa_protocol.errors import LoaxaError
from server.programmes.planner import JOB_TABLE as PLANNER_JOB_TABLE

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BASELINE = "0001"
"""The schema of the release of 2026-11-25, the first one a province may run."""
UPGRADE_COMMAND = "loaxa db upgrade"

# Tables that live in the database but belong to a library, not to our models.
FOREIGN_TABLES = frozenset({PLANNER_JOB_TABLE, "alembic_version"})


class SchemaError(LoaxaError):
    """The database's schema is not the one this version of the server needs."""


def load_metadata() -> MetaData:
    """Every table of the server, found by importing each ``models`` module under it.

    The convention (a table lives in a module named ``models``) replaces the hand-kept
    import list that once forgot a table.
    """
    root = Path(server.__file__).parent
    for path in sorted(root.rglob("models.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        importlib.import_module(".".join(parts))
    return SQLModel.metadata


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, _other: Any) -> bool:
    """Leave library-owned tables (the scheduler's job store) out of every comparison."""
    return not (type_ == "table" and name in FOREIGN_TABLES)


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    """The database's revision; None when it has none (empty, or made before migrations)."""
    head: str
    legacy: bool
    """Tables but no revision: made by a release from before migrations."""

    @property
    def empty(self) -> bool:
        return self.current is None and not self.legacy

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def _head() -> str:
    head = _scripts().get_current_head()
    assert head is not None, "server/migrations has no revision"
    return head


def state(engine: Engine) -> SchemaState:
    """Where the database stands against this code's migrations."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
        ours = set(inspect(connection).get_table_names()) - FOREIGN_TABLES
    return SchemaState(current=current, head=_head(), legacy=current is None and bool(ours))


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Migrate to ``target`` (the newest revision), adopting a pre-migration database first.

    Returns (revision before, revision after). Everything runs in one transaction, DDL
    included (PostgreSQL has transactional DDL; SQLite gets it from
    :func:`_migration_engine`), so a failed migration leaves the database as it was.
    """
    before = state(engine)
    migrating = _migration_engine(engine)
    try:
        with migrating.begin() as connection:
            config = _config(connection)
            if before.legacy:
                _check_adoptable(connection)
                command.stamp(config, BASELINE)
            command.upgrade(config, target)
            _check_foreign_keys(connection)
    finally:
        if migrating is not engine:
            migrating.dispose()
    return (BASELINE if before.legacy else before.current), state(engine).current or ""


def _migration_engine(engine: Engine) -> Engine:
    """For a SQLite file, an engine whose transactions really hold DDL.

    Python's sqlite3 commits before every CREATE/ALTER/DROP, so a migration failing
    half-way would leave tables altered under an unchanged revision. Here the driver's
    own transaction handling is off and SQLAlchemy emits ``BEGIN`` itself, which SQLite
    honours for DDL too. Foreign keys are off while migrating (a batch migration copies a
    table that others reference, which SQLite would refuse) and checked before the commit.
    """
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return engine
    migrating = create_engine(engine.url, connect_args={"timeout": 30})

    @event.listens_for(migrating, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")

    @event.listens_for(migrating, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrating


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return  # PostgreSQL checks every constraint as the migration runs
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        shown = ", ".join(f"{row[0]} row {row[1]} → {row[2]}" for row in broken[:5])
        raise SchemaError(f"the migration would leave rows pointing at nothing: {shown}")


def _check_adoptable(connection: Connection) -> None:
    """A database without a revision must carry the baseline's tables to be adopted."""
    present = set(inspect(connection).get_table_names())
    script = _scripts().get_revision(BASELINE)
    wanted: Sequence[str] = script.module.TABLES  # type: ignore[union-attr]
    missing = sorted(set(wanted) - present)
    if missing:
        raise SchemaError(
            "this database has tables but no schema revision, and lacks "
            f"{', '.join(missing)}: it was not made by a Loaxa release that can be "
            "upgraded (restore a backup of a release from 2026-11-25 or later)"
        )


def ensure_current(engine: Engine) -> None:
    """Start-up check: migrate an empty database, refuse any other that is not current."""
    now = state(engine)
    if now.up_to_date:
        return
    if now.empty:
        _create_at_head(engine)
        return
    if now.legacy:
        found = "was made before schema migrations (release of 2026-11-25)"
    elif now.current not in _known_revisions():
        found = f"is at revision {now.current}, which this version does not know (newer code?)"
    else:
        found = f"is at revision {now.current}, this version needs {now.head}"
    raise SchemaError(f"the database {found}. Back it up, then run `{UPGRADE_COMMAND}`")


def _create_at_head(engine: Engine) -> None:
    """A new database: the models' tables, stamped with the newest revision.

    The same schema as running every migration from nothing (CI proves it, see
    ``differences`` and tests/integration/test_schema.py), in a fraction of the time:
    a first start, the demo and every test make one.
    """
    metadata = load_metadata()
    with engine.begin() as connection:
        metadata.create_all(connection)
        MigrationContext.configure(connection).stamp(_scripts(), "head")


def _known_revisions() -> set[str]:
    return {rev.revision for rev in _scripts().walk_revisions()}


def differences(engine: Engine) -> list[Any]:
    """What the models declare that the migrated database lacks, or the reverse.

    Empty when the migrations describe the models exactly; CI fails otherwise.
    """
    metadata = load_metadata()
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"include_object": include_object, "compare_type": True}
        )
        return list(compare_metadata(context, metadata))
