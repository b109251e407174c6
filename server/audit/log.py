"""Write and verify the audit log: append-only, one hash chain over every entry.

Theory of operation
-------------------
Each entry's ``hash`` is ``sha256(prev_hash + canonical JSON of its fields)`` and its
``prev_hash`` is the hash of the entry before it (64 zeros for the first). Changing any
field of any entry, removing an entry or reordering entries breaks a link that
``verify_chain`` recomputes. What a chain cannot show on its own is the loss of its
*tail*: ``ChainReport.head_hash`` is there to be written down elsewhere.

``record_audit`` adds the entry to the caller's session, so it commits or rolls back
together with the change it describes. Writers are serialised by updating the single
``AuditChainLock`` row before reading the last link: the lock is held until the caller's
transaction ends, so two requests at once always form one chain, on SQLite and on
PostgreSQL, with one server process or several. Call it *after* making the change, so
the lock is held as briefly as possible (and, on PostgreSQL, always taken last).

Summaries are small and never hold secrets: keys that look like secrets are dropped,
long strings and lists are clipped (see ``summarise``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, func, select

from loaxa_protocol.errors import LoaxaError
from server.audit.models import (
    ACTION_CHARS,
    AUDIT_TABLE,
    GENESIS_HASH,
    IP_CHARS,
    KIND_CHARS,
    NAME_CHARS,
    OBJECT_ID_CHARS,
    OBJECT_TYPE_CHARS,
    ROLES_CHARS,
    AuditChainLock,
    AuditEntry,
)
from server.auth.actor import Actor
from server.db import make_engine, utcnow

SECRET_KEY_PARTS = ("password", "token", "secret", "totp")
"""A summary key containing any of these (case-insensitive), or ending in ``_hash``, is
dropped. Substrings on purpose: ``new_password`` and ``api_token`` are secrets too, and
losing a harmless ``token_name`` costs less than storing one real token."""
MAX_TEXT_CHARS = 200
MAX_ITEMS = 20
MAX_DEPTH = 3
ELLIPSIS = "…"

VERIFY_BATCH = 1000

# Built once, run through the session's connection: on the way of every broadcast and
# alert, an ORM-enabled UPDATE and a freshly built SELECT cost ~0.8 ms more (traced).
_CHAIN_LOCK = AuditChainLock.__table__  # type: ignore[attr-defined]
_ENTRIES = AuditEntry.__table__  # type: ignore[attr-defined]
LOCK_CHAIN = (
    sa.update(_CHAIN_LOCK)
    .where(_CHAIN_LOCK.c.id == 1)
    .values(writes=_CHAIN_LOCK.c.writes + sa.bindparam("writes"))
)
NEWEST_HASH = sa.select(_ENTRIES.c.hash).order_by(_ENTRIES.c.id.desc()).limit(1)


class AuditError(LoaxaError):
    """The audit log cannot be written or read as it must be."""


# ----------------------------------------------------------- summaries


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return lowered.endswith("_hash") or any(part in lowered for part in SECRET_KEY_PARTS)


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def column_text(value: str, limit: int) -> str:
    """``value`` fit for a text column: clipped, and NUL (which PostgreSQL refuses in text,
    and which an upload's filename can carry into an object id) made visible as U+FFFD."""
    return clip(value.replace("\x00", "\ufffd"), limit)


def _small(value: Any, depth: int) -> Any:
    """A JSON-ready copy of ``value`` without secrets, bounded in size."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Enum):
        return _small(value.value, depth)
    if isinstance(value, str):
        return clip(value, MAX_TEXT_CHARS)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, Mapping):
        if depth >= MAX_DEPTH:
            return "{" + ELLIPSIS + "}"
        kept = [(str(k), v) for k, v in value.items() if not is_secret_key(str(k))]
        small = {k: _small(v, depth + 1) for k, v in kept[:MAX_ITEMS]}
        if len(kept) > MAX_ITEMS:
            small[ELLIPSIS] = f"{len(kept) - MAX_ITEMS} more keys"
        return small
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            return "[" + ELLIPSIS + "]"
        items = [_small(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"{ELLIPSIS} {len(value) - MAX_ITEMS} more")
        return items
    return clip(str(value), MAX_TEXT_CHARS)


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def summarise(data: Mapping[str, Any] | None) -> str | None:
    """The before/after text stored in an entry: canonical JSON of a small, secret-free copy."""
    if data is None:
        return None
    return canonical_json(_small(data, 0))


# -------------------------------------------------------------- hashing


def hashed_time(at: datetime) -> str:
    """``at`` as hashed (and exported): UTC, ISO 8601, microseconds."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(entry: AuditEntry) -> str:
    """The hash ``entry`` must carry, from its fields and its ``prev_hash``.

    ``id`` is left out: the order is fixed by the links, and the id is only known after
    the insert. ``at`` is hashed as UTC ISO 8601 with microseconds, which both SQLite
    and PostgreSQL store exactly.
    """
    fields = {
        "at": hashed_time(entry.at),
        "actor_kind": entry.actor_kind,
        "actor_name": entry.actor_name,
        "actor_user_id": entry.actor_user_id,
        "roles": entry.roles,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "before": entry.before,
        "after": entry.after,
        "source_ip": entry.source_ip,
    }
    return hashlib.sha256((entry.prev_hash + canonical_json(fields)).encode()).hexdigest()


def last_hash(session: Session) -> str:
    """The hash of the newest entry, or the genesis hash of an empty log."""
    newest: str | None = session.connection().execute(NEWEST_HASH).scalar()
    return newest or GENESIS_HASH


def record_audit(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> AuditEntry:
    """Append one entry to the chain inside the caller's transaction; the caller commits.

    ``source_ip`` defaults to the actor's. The entry is flushed (it has its id) but not
    committed: if the caller rolls back, the change and its entry both vanish. Until the
    caller's transaction ends, other audit writers wait (see the module docstring).
    """
    _lock_chain(session, 1)
    entry = _entry(
        actor, action, object_type, object_id, before, after, source_ip, last_hash(session)
    )
    session.add(entry)
    session.flush()
    return entry


def record_audits(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    changes: Sequence[tuple[str, dict[str, Any] | None]],
) -> None:
    """Append one entry per ``(object_id, after)``, chained in order, in one flush.

    What :func:`record_audit` does N times, with the chain locked and its head read
    once: registering 1,000 stations spent half its time on 3,000 audit round trips.
    """
    _lock_chain(session, len(changes))
    previous = last_hash(session)
    for object_id, after in changes:
        entry = _entry(actor, action, object_type, object_id, None, after, None, previous)
        session.add(entry)
        previous = entry.hash
    session.flush()


def _lock_chain(session: Session, writes: int) -> None:
    # The caller's changes first (the ORM statement this replaced flushed them itself):
    # the chain lock is always taken last, so it is held briefly and never in a cycle.
    session.flush()
    locked = session.connection().execute(LOCK_CHAIN, {"writes": writes})
    if locked.rowcount != 1:
        raise AuditError("the audit chain lock row is missing; was the table created by hand?")


def _entry(
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    source_ip: str | None,
    prev_hash: str,
) -> AuditEntry:
    """A hashed entry that follows ``prev_hash``."""
    # Empty means unknown: stored as NULL, so an exported empty cell reads back exactly.
    ip = source_ip or actor.source_ip or None
    entry = AuditEntry(
        at=utcnow(),
        actor_kind=column_text(actor.kind, KIND_CHARS),
        actor_name=column_text(actor.name, NAME_CHARS),
        actor_user_id=actor.user_id,
        roles=column_text(actor.role_summary, ROLES_CHARS),
        action=column_text(action, ACTION_CHARS),
        object_type=column_text(object_type, OBJECT_TYPE_CHARS),
        object_id=column_text(str(object_id), OBJECT_ID_CHARS),
        before=summarise(before),
        after=summarise(after),
        source_ip=column_text(ip, IP_CHARS) if ip is not None else None,
        prev_hash=prev_hash,
        hash="",  # computed next, from every other field
    )
    entry.hash = entry_hash(entry)
    return entry


# --------------------------------------------------------- verification


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    first_bad_id: int | None
    reason: str
    head_hash: str
    """the last entry's stored hash (64 zeros when empty); noted elsewhere, it exposes a
    later loss of the log's tail, which no chain can show by itself"""


def first_break(entries: Iterable[AuditEntry]) -> tuple[int | None, str] | None:
    """The first entry (in the given order) that does not fit the chain, and why.

    An entry whose fields were altered fails its own hash; the entry after a removed,
    inserted or re-hashed one fails its ``prev_hash``. None when every link holds.
    """
    expected_prev = GENESIS_HASH
    previous_id: int | None = None
    for entry in entries:
        if entry.prev_hash != expected_prev:
            after_what = "the start" if previous_id is None else f"entry {previous_id}"
            return entry.id, (
                f"entry {entry.id} does not link to {after_what}: an entry between them "
                "was removed or inserted, or the earlier one was altered and re-hashed"
            )
        if entry_hash(entry) != entry.hash:
            return entry.id, f"entry {entry.id} was altered: its fields no longer match its hash"
        expected_prev, previous_id = entry.hash, entry.id
    return None


def verify_chain(session: Session) -> ChainReport:
    """Recompute every hash and link in id order (in batches, so a long log fits in memory)."""
    total = session.exec(select(func.count()).select_from(AuditEntry)).one()
    head_hash = last_hash(session)
    rows = session.exec(
        select(AuditEntry).order_by(col(AuditEntry.id)).execution_options(yield_per=VERIFY_BATCH)
    )
    with rows:
        broken = first_break(rows)
    if broken is None:
        return ChainReport(True, total, None, f"{total} entries, chain intact", head_hash)
    bad_id, reason = broken
    return ChainReport(False, total, bad_id, reason, head_hash)


def verify_chain_cli(database_url: str) -> int:
    """``loaxa audit verify``: print the report; exit 0 intact, 1 broken, 2 no audit log.

    A SQLite path that does not exist is refused rather than created empty, so a typo
    cannot pass as an intact (empty) log.
    """
    url = make_url(database_url)
    on_disk = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
    if on_disk and not Path(str(url.database)).is_file():
        print(f"no database at {url.database}")
        return 2
    engine = make_engine(database_url)
    try:
        if not sa.inspect(engine).has_table(AUDIT_TABLE):
            print(f"no audit log in {url.render_as_string(hide_password=True)}")
            return 2
        with Session(engine) as session:
            report = verify_chain(session)
    finally:
        engine.dispose()
    status = "OK" if report.ok else f"BROKEN at entry {report.first_bad_id}"
    print(f"audit chain {status}: {report.reason}")
    print(f"entries: {report.entries}; head hash: {report.head_hash}")
    return 0 if report.ok else 1
