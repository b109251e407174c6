"""The audit API on a real app: filters, CSV export that verifies offline, chain check.

Entries are written with ``record_audit`` on the app's own engine, as the routes do;
the reader is a province admin with a real API token.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlmodel import Session

from server.api.audit import EXPORT_BATCH
from server.app import create_app
from server.audit.export import BOM, CSV_COLUMNS, entry_from_csv
from server.audit.log import entry_hash, first_break, record_audit
from server.audit.models import (
    APPEND_ONLY_MESSAGE,
    POSTGRES_TRIGGER,
    SQLITE_NO_UPDATE_TRIGGER,
    AuditEntry,
)
from server.auth.actor import SYSTEM, Actor, Grant
from server.auth.permissions import Role
from server.settings import Settings
from tests.integration.auth_helpers import authenticate, context_of

LAN = Actor(
    kind="user",
    name="lan.nguyễn",
    user_id=7,
    grants=(Grant("commune_operator", "01273"),),
    source_ip="203.0.113.5",
)
MINH = Actor(kind="user", name="minh", user_id=8, grants=(Grant("technician", "04"),))
CAP = Actor(kind="token", name="cap-sender", grants=(Grant("alert_officer", "04"),))
FORMULA = '=HYPERLINK("http://evil.example","bấm")'


def make_app_client(tmp_path: Path) -> TestClient:
    settings = Settings(
        data_dir=tmp_path / "server",
        mqtt_enabled=False,
        public_url="http://testserver",
        plan_refresh_min=0,
    )
    return TestClient(create_app(settings))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_app_client(tmp_path) as test_client:
        yield authenticate(test_client, Role.PROVINCE_ADMIN)


def record(client: TestClient, actor: Actor, action: str, obj: tuple[str, str], **kw: Any) -> int:
    with Session(context_of(client).engine) as session:
        entry = record_audit(session, actor, action, *obj, **kw)
        session.commit()
        assert entry.id is not None
        return entry.id


@pytest.fixture
def history(client: TestClient) -> list[int]:
    """Six entries of a typical morning, oldest first."""
    return [
        record(client, LAN, "audio.upload", ("audio", "1"), after={"filename": "thong-bao.mp3"}),
        record(
            client,
            LAN,
            "broadcast.create",
            ("broadcast", "1"),
            after={"title": "Tiêm phòng dại", "station_ids": ["cb-st-001"]},
        ),
        record(client, MINH, "denied:broadcast.create", ("broadcast", "-")),
        record(
            client,
            MINH,
            "station.register",
            ("station", FORMULA),
            before=None,
            after={"name": "Cụm loa thôn Nà Rị", "mqtt_password_hash": "$7$..."},
        ),
        record(client, SYSTEM, "auth.login_failed", ("user", "lan.nguyễn"), source_ip="10.9.8.7"),
        record(client, CAP, "alert.send", ("alert", "vn-nchmf-2025-0042")),
    ]


def ids_of(client: TestClient, **params: Any) -> list[int]:
    response = client.get("/api/v1/audit", params=params)
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()]


# ------------------------------------------------------------------- list


def test_list_is_newest_first_and_every_filter_narrows_it(
    client: TestClient, history: list[int]
) -> None:
    upload, create, denied, register, login, alert = history
    assert ids_of(client) == history[::-1]
    assert ids_of(client, actor="minh") == [register, denied]
    assert ids_of(client, action="broadcast.") == [create]
    assert ids_of(client, action="audio.upload") == [upload]
    assert ids_of(client, action="denied:") == [denied]
    assert ids_of(client, action="%") == []  # a prefix, not a LIKE pattern
    assert ids_of(client, object_type="broadcast", object_id="1") == [create]
    assert ids_of(client, object_id=FORMULA) == [register]
    assert ids_of(client, limit=2) == [alert, login]
    assert ids_of(client, limit=2, offset=2) == [register, denied]

    entries = client.get("/api/v1/audit").json()
    times = {e["id"]: e["at"] for e in entries}
    assert ids_of(client, **{"from": times[register]}) == [alert, login, register]
    assert ids_of(client, **{"from": times[denied], "to": times[login]}) == [register, denied]

    shown = next(e for e in entries if e["id"] == create)
    assert shown["after"] == {"title": "Tiêm phòng dại", "station_ids": ["cb-st-001"]}
    assert shown["before"] is None
    assert (shown["actor_name"], shown["roles"]) == ("lan.nguyễn", "commune_operator@01273")
    assert shown["source_ip"] == "203.0.113.5"
    registered = next(e for e in entries if e["id"] == register)
    assert registered["after"] == {"name": "Cụm loa thôn Nà Rị"}  # the hash never stored


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"from": "2025-07-01T05:00:00"}, "timezone"),
        ({"to": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ({"limit": 0}, "limit"),
        ({"limit": 100_000}, "limit"),
        ({"offset": -1}, "offset"),
        ({"actor": "a\x00b"}, "actor"),
    ],
)
def test_bad_filters_are_422_naming_the_parameter(
    client: TestClient, params: dict[str, Any], needle: str
) -> None:
    response = client.get("/api/v1/audit", params=params)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]


@pytest.mark.parametrize("path", ["", "/export.csv", "/verify"])
def test_reading_the_log_needs_audit_read(tmp_path: Path, path: str) -> None:
    with make_app_client(tmp_path) as other:
        anonymous = other.get(f"/api/v1/audit{path}")
        assert anonymous.status_code == 401 and "sign in" in anonymous.json()["detail"]
        # A commune operator may broadcast in the commune, but not read who did what.
        operator = authenticate(other, Role.COMMUNE_OPERATOR, "01273").get(f"/api/v1/audit{path}")
        assert operator.status_code == 403 and "audit.read" in operator.json()["detail"]


def test_there_is_no_way_to_write_through_the_api(client: TestClient, history: list[int]) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/api/v1/audit").status_code == 405
        assert client.request(method, f"/api/v1/audit/{history[0]}").status_code in (404, 405)


# ----------------------------------------------------------------- export


def read_csv(client: TestClient, **params: Any) -> tuple[list[str], list[dict[str, str]]]:
    response = client.get("/api/v1/audit/export.csv", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["content-disposition"]
    assert response.content.startswith(BOM.encode())
    reader = csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"), newline=""))
    return list(reader.fieldnames or []), list(reader)


def test_the_csv_export_round_trips_into_a_chain_that_verifies(
    client: TestClient, history: list[int]
) -> None:
    header, rows = read_csv(client)
    assert header == list(CSV_COLUMNS)
    assert [int(r["id"]) for r in rows] == history  # chain order, oldest first
    entries = [entry_from_csv(r) for r in rows]
    assert first_break(entries) is None
    with Session(context_of(client).engine) as session:
        stored = [session.get(AuditEntry, i) for i in history]
    assert [e.hash for e in entries] == [s.hash for s in stored if s is not None]

    register = rows[3]
    assert register["object_id"] == "'" + FORMULA  # a spreadsheet shows it, never runs it
    assert entries[3].object_id == FORMULA
    assert rows[4]["actor_kind"] == "system" and rows[4]["source_ip"] == "10.9.8.7"

    # A filtered export is a subset; each row still proves its own content.
    _header, lans = read_csv(client, actor="lan.nguyễn")
    assert [int(r["id"]) for r in lans] == history[:2]
    assert all(entry_hash(entry_from_csv(r)) == r["hash"] for r in lans)


def test_the_export_streams_every_row_past_one_batch(client: TestClient) -> None:
    total = EXPORT_BATCH * 2 + 7
    with Session(context_of(client).engine) as session:
        for n in range(total):
            record_audit(session, LAN, "broadcast.create", "broadcast", str(n))
        session.commit()
    _header, rows = read_csv(client)
    assert [r["object_id"] for r in rows] == [str(n) for n in range(total)]
    assert first_break(entry_from_csv(r) for r in rows) is None


# ----------------------------------------------------------------- verify


def test_verify_reports_an_intact_chain_then_the_tampered_entry(
    client: TestClient, history: list[int]
) -> None:
    report = client.get("/api/v1/audit/verify").json()
    assert report["ok"] is True and report["entries"] == len(history)
    assert report["first_bad_id"] is None and len(report["head_hash"]) == 64

    # Someone with the database's own credentials: refused by the trigger, then the
    # trigger dropped (SQLite or PostgreSQL, whichever this run uses) and the row rewritten.
    engine = context_of(client).engine
    rewrite = sa.text("UPDATE auditentry SET after = :after WHERE id = :id")
    with pytest.raises(sa.exc.DBAPIError, match=APPEND_ONLY_MESSAGE), engine.begin() as db:
        db.execute(rewrite, {"after": "{}", "id": history[1]})
    if engine.dialect.name == "sqlite":
        drop = f"DROP TRIGGER {SQLITE_NO_UPDATE_TRIGGER}"
    else:
        drop = f"DROP TRIGGER {POSTGRES_TRIGGER} ON auditentry"
    with engine.begin() as db:
        db.execute(sa.text(drop))
        after = '{"title":"Tiêm phòng dại","station_ids":["cb-st-002"]}'
        db.execute(rewrite, {"after": after, "id": history[1]})

    report = client.get("/api/v1/audit/verify").json()
    assert (report["ok"], report["first_bad_id"]) == (False, history[1])
    assert "altered" in report["reason"]
