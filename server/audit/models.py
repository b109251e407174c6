"""The audit tables: the hash-chained entries and the one row that serialises their writers.

``AuditEntry`` rows are never updated or deleted. Besides having no code path that does
so, the database itself refuses: triggers created with the table raise on UPDATE and
DELETE (and TRUNCATE on PostgreSQL), so a buggy ORM flush or a hand-written statement
fails loudly instead of rewriting history. An attacker with raw database access can drop
the triggers; that is what the hash chain is for (see ``server.audit.log``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import DDL, event
from sqlmodel import Field, SQLModel

from server.db import UTCDateTime

AUDIT_TABLE = "auditentry"
GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first entry: there is nothing before it."""

# Column widths, shared with the code that clips values to them: a value is clipped
# before it is hashed, so what is stored is exactly what was hashed.
KIND_CHARS = 16
NAME_CHARS = 200
ROLES_CHARS = 2000
ACTION_CHARS = 100
OBJECT_TYPE_CHARS = 64
OBJECT_ID_CHARS = 200
IP_CHARS = 64

APPEND_ONLY_MESSAGE = "audit log is append-only"
SQLITE_NO_UPDATE_TRIGGER = "auditentry_no_update"
SQLITE_NO_DELETE_TRIGGER = "auditentry_no_delete"
POSTGRES_TRIGGER = "auditentry_append_only"
POSTGRES_FUNCTION = "loaxa_audit_append_only"


class AuditEntry(SQLModel, table=True):
    """One write (or refused attempt) by one actor, linked to the entry before it."""

    __tablename__ = AUDIT_TABLE
    __table_args__ = (sa.Index("ix_auditentry_object", "object_type", "object_id"),)

    id: int | None = Field(default=None, primary_key=True, description="the chain order")
    at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor_kind: str = Field(max_length=KIND_CHARS, description="user, token or system")
    actor_name: str = Field(max_length=NAME_CHARS, index=True)
    actor_user_id: int | None = Field(default=None)
    roles: str = Field(sa_type=sa.Text, description="Actor.role_summary at the time")
    action: str = Field(
        max_length=ACTION_CHARS,
        index=True,
        description="e.g. 'broadcast.create', 'auth.login_failed', 'denied:broadcast.create'",
    )
    object_type: str = Field(max_length=OBJECT_TYPE_CHARS)
    object_id: str = Field(max_length=OBJECT_ID_CHARS)
    before: str | None = Field(default=None, sa_type=sa.Text, description="canonical JSON")
    after: str | None = Field(default=None, sa_type=sa.Text, description="canonical JSON")
    source_ip: str | None = Field(default=None, max_length=IP_CHARS)
    # Unique: two writers that both linked to the same predecessor would fork the chain;
    # the second insert fails instead of silently doing so.
    prev_hash: str = Field(max_length=64, unique=True)
    hash: str = Field(max_length=64, unique=True)


class AuditEntryPublic(SQLModel):
    """An entry as the API shows it: the summaries parsed back into JSON values."""

    id: int
    at: datetime
    actor_kind: str
    actor_name: str
    actor_user_id: int | None
    roles: str
    action: str
    object_type: str
    object_id: str
    before: Any = Field(description="summary before the change; raw text if not JSON")
    after: Any = Field(description="summary after the change; raw text if not JSON")
    source_ip: str | None
    prev_hash: str
    hash: str


class AuditChainLock(SQLModel, table=True):
    """A single row every audit writer updates before reading the chain's last link.

    The update takes a lock that is held until the writer's transaction ends (a row lock
    on PostgreSQL, the database write lock on SQLite), so the next writer reads the link
    only after this one has committed or rolled back. ``writes`` counts the entries made.
    """

    id: int = Field(default=1, primary_key=True)
    writes: int = Field(default=0, sa_type=sa.BigInteger)


def _append_only_guards() -> list[DDL]:
    """Triggers that make the database itself refuse to rewrite an audit entry."""
    refuse = f"SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}')"
    sqlite = [
        DDL(f"CREATE TRIGGER {name} BEFORE {operation} ON {AUDIT_TABLE} BEGIN {refuse}; END")
        for name, operation in (
            (SQLITE_NO_UPDATE_TRIGGER, "UPDATE"),
            (SQLITE_NO_DELETE_TRIGGER, "DELETE"),
        )
    ]
    # No '%' anywhere: DDL text goes through %-formatting before it reaches the driver.
    postgres = [
        DDL(
            f"CREATE OR REPLACE FUNCTION {POSTGRES_FUNCTION}() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            f"RAISE EXCEPTION USING MESSAGE = '{APPEND_ONLY_MESSAGE}: ' || TG_OP || ' refused'; "
            "END $$"
        ),
        DDL(
            f"CREATE TRIGGER {POSTGRES_TRIGGER} BEFORE UPDATE OR DELETE OR TRUNCATE "
            f"ON {AUDIT_TABLE} FOR EACH STATEMENT EXECUTE FUNCTION {POSTGRES_FUNCTION}()"
        ),
    ]
    return [ddl.execute_if(dialect="sqlite") for ddl in sqlite] + [
        ddl.execute_if(dialect="postgresql") for ddl in postgres
    ]


for _guard in _append_only_guards():
    event.listen(AuditEntry.__table__, "after_create", _guard)  # type: ignore[attr-defined]
event.listen(
    AuditChainLock.__table__,  # type: ignore[attr-defined]
    "after_create",
    DDL("INSERT INTO auditchainlock (id, writes) VALUES (1, 0)"),
)
