"""Locks that make a read-check-write atomic on SQLite and on PostgreSQL alike.

Two officers acting at the same instant must not both pass a check that only one of
them may pass (confirm and cancel of one alert; two approvals into one time slot).
Each helper is called *before* the reads that decide, and holds until the session's
transaction ends (commit or rollback).

- PostgreSQL: row locks (``SELECT … FOR UPDATE``) and a transaction advisory lock. In
  READ COMMITTED every statement after the lock sees what the previous holder committed.
- SQLite has one write lock for the whole database, and Python's ``sqlite3`` only takes
  it at the first write of a transaction, *after* the reads that decided. So the helpers
  open with a write that changes nothing (``UPDATE … WHERE false``): the same effect as
  ``BEGIN IMMEDIATE``. Reads after it are current, and no other writer commits until
  this transaction ends (others wait, up to the engine's busy timeout).
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Table, false, select, text, update
from sqlmodel import Session

SCHEDULE_LOCK_KEY = 0x4C4F4158_00000001
"""The advisory-lock key of schedule writes ("LOAX" + 1): a 64-bit constant."""


def _sqlite_write_lock(session: Session, table: Table) -> None:
    key = next(iter(table.primary_key.columns))
    session.execute(update(table).where(false()).values({key: key}))


def lock_rows(session: Session, table: Table, *where: ColumnElement[bool]) -> None:
    """Hold the rows of ``table`` matching ``where`` for writing until the transaction ends."""
    if session.get_bind().dialect.name == "sqlite":
        _sqlite_write_lock(session, table)
        return
    key = next(iter(table.primary_key.columns))
    session.execute(select(key).where(*where).order_by(key).with_for_update()).all()


def lock_schedule(session: Session, table: Table) -> None:
    """Serialise every write to the broadcast schedule (saves, approvals, one-offs).

    Schedule changes are rare and made by people, so one lock for all of them costs
    nothing and leaves no lock order to get wrong. It does not block station ingest
    (which writes station rows) on PostgreSQL; on SQLite every writer shares one lock
    anyway. ``table`` is any table this transaction may write (SQLite needs one).
    """
    if session.get_bind().dialect.name == "sqlite":
        _sqlite_write_lock(session, table)
        return
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEDULE_LOCK_KEY})
