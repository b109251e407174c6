"""Two people acting at the same instant, on real SQLite and on real PostgreSQL.

Threads hit the real app at once (each request has its own database session) behind a
barrier, round after round, and the tests assert what a province officer or a commune
operator relies on:

- a cancelled alert is never played after its cancel: on every topic, no copy of the
  alert is published after the cancel (the recording bus keeps the publish order);
- an answer of "cancelled" means cancelled: the record agrees with what went out;
- never two overlapping programmes in one slot of one station, however many are saved,
  submitted and approved at once.

PostgreSQL runs at 127.0.0.1:5432 (trust auth, user postgres); each pytest worker gets a
database of its own (``loaxa_alerts_test``, ``…_gw0``…). Without a server those cases
are skipped, saying so.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from httpx import Response
from sqlmodel import Session, col, select

from loaxa_protocol import (
    Alert,
    AlertCancel,
    Event,
    EventKind,
    Keyring,
    Verified,
    open_envelope,
    topics,
)
from server.app import create_app
from server.auth.permissions import Role
from server.programmes.models import Programme
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import RecordingBus, make_settings, register

PROVINCE, COMMUNE_A, COMMUNE_B = "04", "01273", "01279"
PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
ROUNDS = 12
ADDRESSEES = frozenset({f"area:{PROVINCE}", f"area:{COMMUNE_A}", f"area:{COMMUNE_B}"})


def postgres_url() -> str:
    """A fresh, empty database for this worker, or skip saying why."""
    name = "loaxa_alerts_test" + (
        f"_{os.environ['PYTEST_XDIST_WORKER']}" if "PYTEST_XDIST_WORKER" in os.environ else ""
    )
    admin = sa.create_engine(
        f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as connection:
            exists = connection.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if exists is None:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {PG_SERVER} (trust auth, user postgres): {exc}")
    finally:
        admin.dispose()
    url = f"{PG_SERVER}/{name}"
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sa.text("DROP SCHEMA public CASCADE"))
        connection.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def bus() -> RecordingBus:
    return RecordingBus()


class Clock:
    """The server's clock: real time plus what the test skipped ahead."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def make_client(
    tmp_path: Path, backend: str, bus: RecordingBus, clock: Clock, **settings: Any
) -> Iterator[TestClient]:
    url = postgres_url() if backend == "postgresql" else None  # SQLite: a file in tmp_path
    app = create_app(make_settings(tmp_path, database_url=url, **settings), bus=bus, clock=clock)
    with TestClient(app) as client:
        assert context_of(client).engine.dialect.name == backend
        yield authenticate(client)
    context_of(client).engine.dispose()


def at_once(*calls: Callable[[], Response]) -> list[Response]:
    """Run the calls in threads released together by a barrier; answers in call order."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[], Response]) -> Response:
        start.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def token(client: TestClient, name: str, role: Role, area: str = PROVINCE) -> dict[str, str]:
    return bearer(make_token(context_of(client).engine, name, (role, area)))


# ------------------------------------------------------------------ alerts


@pytest.fixture
def alert_client(
    tmp_path: Path, backend: str, bus: RecordingBus, clock: Clock
) -> Iterator[TestClient]:
    with make_client(tmp_path, backend, bus, clock, alert_settle_s=0) as client:
        for area, station_id in [(COMMUNE_A, "a-1"), (COMMUNE_A, "a-2"), (COMMUNE_B, "b-1")]:
            register(client, area, id=station_id)
        yield client


def wire_of(
    client: TestClient, bus: RecordingBus, clock: Clock, alert_id: str
) -> list[tuple[str, str]]:
    """(topic, Alert | AlertCancel) of every message about ``alert_id``, in publish order."""
    keyring = Keyring.of(context_of(client).keys.alert_key)
    found = []
    for topic, raw, _qos, _retain in list(bus.published):
        if not topic.endswith("/alert"):
            continue
        # Opened as a station opens it (the alert key alone), though maybe expired by now.
        verdict = open_envelope(raw, keyring, clock(), ADDRESSEES, check_expiry=False)
        assert isinstance(verdict, Verified), verdict
        message = verdict.message
        if isinstance(message, Alert | AlertCancel) and message.alert_id == alert_id:
            found.append((topic, type(message).__name__))
    return found


def assert_never_played_after_cancel(wire: list[tuple[str, str]]) -> None:
    """Per topic: once a cancel went out, no copy of the alert follows it, and every topic
    that carried the alert carries a cancel after it."""
    for topic in {t for t, _kind in wire}:
        kinds = [kind for t, kind in wire if t == topic]
        if "AlertCancel" in kinds:
            assert "Alert" not in kinds[kinds.index("AlertCancel") :], (topic, kinds)
        if "Alert" in kinds:
            assert kinds[-1] == "AlertCancel", (topic, kinds)


def test_confirm_and_cancel_at_once_never_leave_an_alert_playing_after_its_cancel(
    alert_client: TestClient, bus: RecordingBus, clock: Clock
) -> None:
    client = alert_client
    author = token(client, "officer-a", Role.ALERT_OFFICER)
    confirmer = token(client, "officer-b", Role.ALERT_OFFICER)
    canceller = token(client, "officer-c", Role.ALERT_OFFICER)
    body = {"title": "Bão số 3", "canned": "typhoon", "area_codes": [COMMUNE_A, COMMUNE_B]}
    outcomes = set()
    for _round in range(ROUNDS):
        held = client.post("/api/v1/alerts", json=body, headers=author).json()
        assert held["state"] == "awaiting_confirmation", held
        url = f"/api/v1/alerts/{held['id']}"
        confirmed, cancelled = at_once(
            lambda: client.post(f"{url}/confirm", headers=confirmer),  # noqa: B023
            lambda: client.post(f"{url}/cancel", headers=canceller),  # noqa: B023
        )
        assert cancelled.status_code == 200, cancelled.text
        assert confirmed.status_code in (200, 409), confirmed.text
        wire = wire_of(client, bus, clock, held["alert_id"])
        assert_never_played_after_cancel(wire)
        record = client.get(url, headers=author).json()
        assert record["state"] == "cancelled"
        if confirmed.status_code == 200:  # it went out first: the cancel followed everywhere
            assert record["sent_at"] is not None
            assert {t for t, kind in wire if kind == "Alert"} == {
                topics.area_alert(COMMUNE_A),
                topics.area_alert(COMMUNE_B),
            }
        else:  # the cancel came first: nothing was ever sent
            assert "cancelled" in confirmed.json()["detail"] and wire == []
        outcomes.add(confirmed.status_code)
    print(f"confirm outcomes over {ROUNDS} rounds: {sorted(outcomes)}")


def finished(client: TestClient, station_id: str, alert_id: str) -> tuple[str, bytes]:
    now = datetime.now(UTC)
    event = Event(
        station_id=station_id,
        kind=EventKind.ALERT_FINISHED,
        at=now,
        alert_id=alert_id,
        started_at=now - timedelta(seconds=20),
        finished_at=now,
    )
    return topics.event(station_id), event.model_dump_json().encode()


def test_a_cancel_racing_the_last_station_finishing_answers_what_the_record_says(
    alert_client: TestClient, bus: RecordingBus, clock: Clock
) -> None:
    """The record never says 'finished' after the officer was told 'cancelled' (or back)."""
    client = alert_client
    officer = token(client, "officer-a", Role.ALERT_OFFICER)
    body = {"title": "Lũ", "canned": "flood", "area_codes": [COMMUNE_A], "drill": True}
    ingestor = context_of(client).ingestor
    for _round in range(ROUNDS):
        sent = client.post("/api/v1/alerts", json=body, headers=officer).json()
        assert sent["state"] == "active", sent
        url = f"/api/v1/alerts/{sent['id']}"
        acks = [finished(client, sid, sent["alert_id"]) for sid in ("a-1", "a-2")]

        def last_acks(acks: list[tuple[str, bytes]] = acks) -> Response:
            ingestor.handle(acks)
            return Response(204)

        cancel, _ = at_once(lambda: client.post(f"{url}/cancel", headers=officer), last_acks)  # noqa: B023
        state = client.get(url, headers=officer).json()["state"]
        wire = wire_of(client, bus, clock, sent["alert_id"])
        if cancel.status_code == 200:
            assert state == "cancelled" and wire[-1][1] == "AlertCancel"
        else:
            assert cancel.status_code == 409, cancel.text
            assert state == "finished" and "already finished" in cancel.json()["detail"]
            assert [kind for _t, kind in wire] == ["Alert"]


def test_a_cancel_at_the_instant_of_expiry_answers_what_the_record_says(
    alert_client: TestClient, bus: RecordingBus, clock: Clock
) -> None:
    """The expiry sweep and an officer's cancel at once: one of them wins, and the answer,
    the record and the wire agree (told "cancelled" → cancelled and a cancel went out)."""
    client = alert_client
    officer = token(client, "officer-a", Role.ALERT_OFFICER)
    settle = context_of(client).alerts.settle
    outcomes = set()
    for round_number in range(ROUNDS):
        expires = (clock() + timedelta(minutes=5)).isoformat()
        body = {"title": "Cháy", "canned": "fire", "area_codes": [COMMUNE_A], "drill": True}
        sent = client.post("/api/v1/alerts", json={**body, "expires_at": expires}, headers=officer)
        assert sent.status_code == 201, sent.text
        url = f"/api/v1/alerts/{sent.json()['id']}"
        clock.ahead += timedelta(minutes=6)  # past its expiry, not yet swept

        def sweep(delay_s: float = round_number * 0.004) -> Response:
            time.sleep(delay_s)  # a cancel's HTTP round trip is slower: stagger the sweep
            return Response(200 if settle() else 204)

        cancel, swept = at_once(lambda: client.post(f"{url}/cancel", headers=officer), sweep)  # noqa: B023
        state = client.get(url, headers=officer).json()["state"]
        kinds = [kind for _t, kind in wire_of(client, bus, clock, sent.json()["alert_id"])]
        if cancel.status_code == 200:
            assert state == "cancelled" and kinds == ["Alert", "AlertCancel"]
        else:
            assert cancel.status_code == 409 and "already expired" in cancel.json()["detail"]
            assert state == "expired" and swept.status_code == 200 and kinds == ["Alert"]
        outcomes.add(cancel.status_code)
    print(f"cancel outcomes at expiry over {ROUNDS} rounds: {sorted(outcomes)}")


# ------------------------------------------------------------------ programmes


@pytest.fixture
def schedule_client(
    tmp_path: Path, backend: str, bus: RecordingBus, clock: Clock
) -> Iterator[TestClient]:
    with make_client(tmp_path, backend, bus, clock) as client:
        register(client, COMMUNE_A, id="cb-st-001")
        yield client


def morning(key: str, start: str) -> dict[str, Any]:
    """One minute at ``start`` local on Mondays to Saturdays, on commune A's station."""
    return {
        "key": key,
        "title": f"Bản tin {key}",
        "area": COMMUNE_A,
        "start": start,
        "rrule": "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA",
        "targets": {"areas": [COMMUNE_A]},
        "items": [{"kind": "silence", "seconds": 60, "title": "chờ"}],
    }


def in_slot(client: TestClient) -> dict[str, str]:
    """State of every programme that holds (or wants) the slot, by key."""
    with Session(context_of(client).engine) as session:
        rows = session.exec(select(Programme).order_by(col(Programme.id))).all()
        return {p.key: p.state.value for p in rows}


def test_programmes_saved_and_approved_at_once_never_share_a_slot(
    schedule_client: TestClient,
) -> None:
    """Operators save four overlapping bulletins at the same instant; approvers approve
    whatever got in, also at once. One slot, one programme: the others get a clear 409."""
    client = schedule_client
    operator = token(client, "van-thu", Role.COMMUNE_OPERATOR, COMMUNE_A)
    approvers = [token(client, f"duyet-{n}", Role.APPROVER, COMMUNE_A) for n in range(2)]
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    for round_number in range(ROUNDS // 2):
        keys = [f"r{round_number}-{n}" for n in range(4)]
        starts = [f"{tomorrow}T05:{round_number:02d}:{seconds:02d}" for seconds in (0, 10, 20, 30)]

        def save(key: str, start: str) -> Callable[[], Response]:
            return lambda: client.post(
                "/api/v1/programmes", json=morning(key, start), headers=operator
            )

        saved = at_once(*(save(k, s) for k, s in zip(keys, starts, strict=True)))
        codes = sorted(r.status_code for r in saved)
        assert codes == [201, 409, 409, 409], [r.text for r in saved]
        assert all("clash" in r.text or "overlap" in r.text for r in saved if r.status_code == 409)
        (winner,) = [r.json()["id"] for r in saved if r.status_code == 201]
        submitted = client.post(f"/api/v1/programmes/{winner}/submit", headers=operator)
        assert submitted.status_code == 200, submitted.text
        approved = at_once(
            *(
                (lambda h=h, w=winner: client.post(f"/api/v1/programmes/{w}/approve", headers=h))
                for h in approvers
            )
        )
        assert sorted(r.status_code for r in approved) == [200, 409], [r.text for r in approved]
    states = in_slot(client)
    assert list(states.values()).count("approved") == ROUNDS // 2  # one per slot, each minute
    assert set(states.values()) == {"approved"}


def test_a_rejected_programme_submitted_again_does_not_take_back_a_slot_given_away(
    schedule_client: TestClient,
) -> None:
    """Rejected frees the slot; another bulletin takes it; the first one submitted again
    (even at the same instant as the other's approval) is refused, naming the clash."""
    client = schedule_client
    operator = token(client, "van-thu", Role.COMMUNE_OPERATOR, COMMUNE_A)
    approver = token(client, "duyet", Role.APPROVER, COMMUNE_A)
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    first = client.post(
        "/api/v1/programmes", json=morning("cu", f"{tomorrow}T05:00:00"), headers=operator
    ).json()
    client.post(f"/api/v1/programmes/{first['id']}/submit", headers=operator)
    rejected = client.post(
        f"/api/v1/programmes/{first['id']}/reject", json={"reason": "sai giờ"}, headers=approver
    )
    assert rejected.json()["state"] == "rejected"
    second = client.post(
        "/api/v1/programmes", json=morning("moi", f"{tomorrow}T05:00:30"), headers=operator
    ).json()
    client.post(f"/api/v1/programmes/{second['id']}/submit", headers=operator)
    resubmit, approve = at_once(
        lambda: client.post(f"/api/v1/programmes/{first['id']}/submit", headers=operator),
        lambda: client.post(f"/api/v1/programmes/{second['id']}/approve", headers=approver),
    )
    assert approve.status_code == 200, approve.text
    assert resubmit.status_code == 409 and "moi" in resubmit.json()["detail"], resubmit.text
    assert in_slot(client) == {"cu": "rejected", "moi": "approved"}
