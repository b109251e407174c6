"""The audit chain on a real database: it verifies, tampering is found, history can't be rewritten.

Each database test runs on SQLite and on PostgreSQL. PostgreSQL is used when the driver
(psycopg) is installed and a server answers at ``LOAXA_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test gets its own schema.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, SQLModel, col, select

from server.audit.log import (
    MAX_ITEMS,
    MAX_TEXT_CHARS,
    entry_hash,
    record_audit,
    summarise,
    verify_chain,
    verify_chain_cli,
)
from server.audit.models import (
    APPEND_ONLY_MESSAGE,
    GENESIS_HASH,
    POSTGRES_TRIGGER,
    SQLITE_NO_DELETE_TRIGGER,
    SQLITE_NO_UPDATE_TRIGGER,
    AuditChainLock,
    AuditEntry,
)
from server.auth.actor import Actor, Grant
from server.db import make_engine

POSTGRES_URL = os.environ.get(
    "LOAXA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
AUDIT_TABLES = [AuditEntry.__table__, AuditChainLock.__table__]  # type: ignore[attr-defined]

LAN = Actor(
    kind="user",
    name="lan.nguyen",
    user_id=7,
    grants=(Grant("commune_operator", "01273"),),
    source_ip="203.0.113.5",
)


def _postgres_engine(schema: str) -> Engine:
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL: the psycopg driver is not installed in the venv")
    admin = create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    finally:
        admin.dispose()
    return create_engine(POSTGRES_URL, connect_args={"options": f"-csearch_path={schema}"})


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An empty database holding only the audit tables (and their triggers)."""
    schema = f"audit_{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        db = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    else:
        db = _postgres_engine(schema)
    SQLModel.metadata.create_all(db, tables=AUDIT_TABLES)
    yield db
    if db.dialect.name == "postgresql":
        with db.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    db.dispose()


def write_entries(engine: Engine, count: int) -> list[int]:
    """``count`` entries, one committed transaction each, as requests would make them."""
    ids = []
    for n in range(count):
        with Session(engine) as session:
            entry = record_audit(
                session,
                LAN,
                "broadcast.create",
                "broadcast",
                str(n),
                after={"title": f"Thông báo số {n}", "stations": ["cb-st-001"]},
            )
            session.commit()
            assert entry.id is not None
            ids.append(entry.id)
    return ids


def lift_guards(engine: Engine) -> None:
    """What an attacker with database access does first: remove the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(sa.text(f"DROP TRIGGER {SQLITE_NO_UPDATE_TRIGGER}"))
            conn.execute(sa.text(f"DROP TRIGGER {SQLITE_NO_DELETE_TRIGGER}"))
        else:
            conn.execute(sa.text(f"DROP TRIGGER {POSTGRES_TRIGGER} ON auditentry"))


def report_of(engine: Engine) -> tuple[bool, int, int | None, str]:
    with Session(engine) as session:
        report = verify_chain(session)
    return report.ok, report.entries, report.first_bad_id, report.reason


# ------------------------------------------------------------------ chain


def test_an_empty_log_verifies_with_the_genesis_hash(engine: Engine) -> None:
    with Session(engine) as session:
        report = verify_chain(session)
    assert (report.ok, report.entries, report.head_hash) == (True, 0, GENESIS_HASH)


def test_fifty_entries_form_one_verifiable_chain(engine: Engine) -> None:
    ids = write_entries(engine, 50)
    with Session(engine) as session:
        report = verify_chain(session)
        entries = session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
    assert report.ok, report.reason
    assert (report.entries, report.first_bad_id) == (50, None)
    assert [e.id for e in entries] == ids
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    assert report.head_hash == entries[-1].hash == entry_hash(entries[-1])
    first = entries[0]
    assert (first.actor_kind, first.actor_name, first.actor_user_id) == ("user", "lan.nguyen", 7)
    assert (first.roles, first.source_ip) == ("commune_operator@01273", "203.0.113.5")
    assert first.at.tzinfo is not None


def test_altering_one_entry_is_reported_at_that_entry(engine: Engine) -> None:
    ids = write_entries(engine, 50)
    target = ids[16]
    lift_guards(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE auditentry SET after = :after WHERE id = :id"),
            {"after": '{"title":"Thông báo số 99"}', "id": target},
        )
    ok, entries, first_bad_id, reason = report_of(engine)
    assert (ok, entries, first_bad_id) == (False, 50, target)
    assert f"entry {target} was altered" in reason


def test_an_altered_and_rehashed_entry_breaks_the_next_link(engine: Engine) -> None:
    ids = write_entries(engine, 20)
    target = ids[9]
    lift_guards(engine)
    with Session(engine) as session:
        entry = session.get(AuditEntry, target)
        assert entry is not None
        entry.action = "broadcast.cancel"
        entry.hash = entry_hash(entry)  # the attacker knows the algorithm
        session.commit()
    ok, _entries, first_bad_id, reason = report_of(engine)
    assert (ok, first_bad_id) == (False, ids[10])
    assert f"does not link to entry {target}" in reason


def test_deleting_an_entry_in_the_middle_is_detected(engine: Engine) -> None:
    ids = write_entries(engine, 30)
    lift_guards(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM auditentry WHERE id = :id"), {"id": ids[14]})
    ok, entries, first_bad_id, reason = report_of(engine)
    assert (ok, entries, first_bad_id) == (False, 29, ids[15])
    assert "removed" in reason


def test_the_database_refuses_update_and_delete(engine: Engine) -> None:
    ids = write_entries(engine, 3)
    statements = [
        "UPDATE auditentry SET action = 'nothing.happened'",
        f"DELETE FROM auditentry WHERE id = {ids[1]}",
    ]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE auditentry")
    for statement in statements:
        with pytest.raises(DBAPIError, match=APPEND_ONLY_MESSAGE), engine.begin() as conn:
            conn.execute(sa.text(statement))

    # A buggy ORM code path is stopped the same way.
    with Session(engine) as session:
        entry = session.get(AuditEntry, ids[0])
        assert entry is not None
        entry.after = None
        with pytest.raises(DBAPIError, match=APPEND_ONLY_MESSAGE):
            session.commit()
    assert report_of(engine)[:3] == (True, 3, None)


def test_a_rolled_back_change_takes_its_entry_with_it(engine: Engine) -> None:
    write_entries(engine, 2)
    with Session(engine) as session:
        record_audit(session, LAN, "station.register", "station", "cb-st-009")
        session.rollback()
    write_entries(engine, 1)
    ok, entries, _bad, _reason = report_of(engine)
    assert (ok, entries) == (True, 3)
    with Session(engine) as session:
        actions = session.exec(select(AuditEntry.action)).all()
    assert "station.register" not in actions


def test_concurrent_writers_form_one_unbroken_chain(engine: Engine) -> None:
    threads_n, per_thread = 8, 10
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with Session(engine) as session:
                    record_audit(session, LAN, "audio.upload", "audio", f"{n}-{i}")
                    session.commit()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ok, entries, _bad, reason = report_of(engine)
    assert (ok, entries) == (True, threads_n * per_thread), reason
    with Session(engine) as session:
        lock = session.get(AuditChainLock, 1)
    assert lock is not None and lock.writes == threads_n * per_thread


# -------------------------------------------------------------- summaries


def test_summaries_drop_secrets_at_any_depth() -> None:
    text = summarise(
        {
            "username": "lan.nguyen",
            "password": "hunter2hunter2",
            "New_Password": "x",
            "api_token": "tok",
            "totp_secret": "JBSWY3DPEHPK3PXP",
            "mqtt_password_hash": "$7$...",
            "url_secret": "s",
            "station": {"id": "cb-st-001", "secret_key": "k", "mqtt": {"token": "t", "user": "n"}},
        }
    )
    assert text is not None
    for secret in ("hunter2", "tok", "JBSWY3DPEHPK3PXP", "$7$", '"s"', '"k"', '"t"'):
        assert secret not in text
    assert text == ('{"station":{"id":"cb-st-001","mqtt":{"user":"n"}},"username":"lan.nguyen"}')


def test_summaries_stay_small() -> None:
    text = summarise(
        {
            "title": "x" * 5000,
            "stations": [f"cb-st-{n:03d}" for n in range(500)],
            "deep": {"a": {"b": {"c": {"d": 1}}}},
            "blob": b"\0" * 10_000,
            "ratio": float("nan"),
        }
    )
    assert text is not None and len(text) < 1200
    assert f'"title":"{"x" * (MAX_TEXT_CHARS - 1)}…"' in text
    assert f'"… {500 - MAX_ITEMS} more"' in text
    assert '"deep":{"a":{"b":"{…}"}}' in text
    assert '"blob":"<10000 bytes>"' in text and '"ratio":"nan"' in text
    assert summarise(None) is None


def test_recorded_entries_hold_only_the_summaries(engine: Engine) -> None:
    with Session(engine) as session:
        entry = record_audit(
            session,
            LAN,
            "user.update",
            "user",
            "7\x00../x",
            before={"username": "lan", "password_hash": "$argon2id$..."},
            after={"username": "lan", "password": "new-secret-value"},
            source_ip="198.51.100.1",
        )
        session.commit()
        assert (entry.before, entry.after) == ('{"username":"lan"}', '{"username":"lan"}')
        assert entry.source_ip == "198.51.100.1"  # the explicit address beats the actor's
        assert entry.object_id == "7\ufffd../x"  # PostgreSQL text cannot hold NUL


# -------------------------------------------------------------------- CLI


def test_verify_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "loaxa.db"
    url = f"sqlite:///{path}"
    assert verify_chain_cli(url) == 2
    assert not path.exists()  # a typo in the path is not created as an empty, "intact" log

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE other (id INTEGER)"))
    assert verify_chain_cli(url) == 2
    SQLModel.metadata.create_all(engine, tables=AUDIT_TABLES)
    write_entries(engine, 5)
    capsys.readouterr()
    assert verify_chain_cli(url) == 0
    assert "audit chain OK: 5 entries" in capsys.readouterr().out

    lift_guards(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE auditentry SET object_id = 'x' WHERE id = 3"))
    engine.dispose()
    assert verify_chain_cli(url) == 1
    assert "BROKEN at entry 3" in capsys.readouterr().out
