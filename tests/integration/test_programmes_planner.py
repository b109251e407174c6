"""The planner on a real app: persistent jobs, the rolling horizon, retries, pre-rendering.

Real SQLite (the job store lives in the server's database), real espeak-ng and ffmpeg,
an injected clock that moves across days, and a bus that can be made to fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from loaxa_protocol import Keyring, Plan, Verified, open_envelope, topics
from server.app import create_app
from server.auth.permissions import Role
from server.programmes.planner import JOB_TABLE, run_job
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import make_settings, register

NOW = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)  # Sun 22:00 local
API = "/api/v1"


@dataclass
class FlakyBus:
    """Records publishes; raises while ``down`` (a broker that is away)."""

    down: bool = False
    published: list[tuple[str, bytes]] = field(default_factory=list)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        self.published.append((topic, payload))

    def flush(self, timeout_s: float) -> None:
        """Nothing waits: publish kept it already."""

    def on(self, topic: str) -> list[bytes]:
        return [p for t, p in self.published if t == topic]


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bus() -> FlakyBus:
    return FlakyBus()


def app_for(tmp_path: Path, bus: FlakyBus, clock: Clock) -> TestClient:
    settings = make_settings(tmp_path, plan_refresh_min=30, programme_prerender_min=60)
    return TestClient(create_app(settings, bus=bus, clock=clock))


@pytest.fixture
def client(tmp_path: Path, bus: FlakyBus, clock: Clock) -> Iterator[TestClient]:
    with app_for(tmp_path, bus, clock) as test_client:
        yield authenticate(test_client)


def jobs(client: TestClient) -> list[str]:
    with context_of(client).engine.connect() as connection:
        rows = connection.execute(sa.text(f"SELECT id FROM {JOB_TABLE} ORDER BY id"))
        return [row[0] for row in rows]


def plan_of(client: TestClient, bus: FlakyBus, station_id: str, now: datetime) -> Plan:
    keyring = Keyring.from_entries(context_of(client).keys.trusted_entries(now))
    opened = open_envelope(bus.on(topics.plan(station_id))[-1], keyring, now, {station_id})
    assert isinstance(opened, Verified) and isinstance(opened.message, Plan)
    return opened.message


def days_at_five(year: int, month: int, day: int, count: int) -> list[str]:
    """Local ``yyyymmdd0500`` stamps of ``count`` days from the given one."""
    first = datetime(year, month, day)
    return [(first + timedelta(days=n)).strftime("%Y%m%d0500") for n in range(count)]


def mornings(plan: Plan) -> list[str]:
    return sorted({i.item_id.rsplit(".", 1)[1] for i in plan.items if i.item_id[0] == "p"})


def daily_speech(client: TestClient, station_id: str) -> dict[str, Any]:
    body = {
        "key": "loa-sang",
        "title": "Thông báo buổi sáng",
        "area": "01273",
        "start": "2026-12-07T05:00:00",
        "rrule": "FREQ=DAILY",
        "targets": {"stations": [station_id]},
        "items": [{"kind": "tts", "text": "Chào buổi sáng bà con."}],
    }
    created = client.post(f"{API}/programmes", json=body)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    client.post(f"{API}/programmes/{pid}/submit")
    approver = bearer(make_token(context_of(client).engine, "duyet", (Role.APPROVER, "01273")))
    approved = client.post(f"{API}/programmes/{pid}/approve", headers=approver)
    assert approved.status_code == 200, approved.text
    return dict(approved.json())


def test_the_jobs_live_in_the_database_and_survive_a_restart(
    tmp_path: Path, bus: FlakyBus, clock: Clock
) -> None:
    with app_for(tmp_path, bus, clock) as first:
        assert jobs(first) == ["prerender", "roll-forward"]
        engine_url = context_of(first).settings.db_url
    # Stopped: the rows are still there.
    engine = sa.create_engine(engine_url)
    with engine.connect() as connection:
        stored = connection.execute(sa.text(f"SELECT id FROM {JOB_TABLE} ORDER BY id"))
        assert [row[0] for row in stored] == ["prerender", "roll-forward"]
    engine.dispose()
    with app_for(tmp_path, bus, clock) as second:
        assert jobs(second) == ["prerender", "roll-forward"]  # replaced, not doubled


def test_rolling_forward_brings_the_next_days_into_the_plan(
    client: TestClient, bus: FlakyBus, clock: Clock
) -> None:
    station = register(client, "01273", id="cb-st-001")["station"]["id"]
    daily_speech(client, station)
    # Nine days ahead: a station cut off now still plays every morning for over a week.
    assert mornings(plan_of(client, bus, station, clock.now)) == days_at_five(2026, 12, 7, 9)
    clock.now += timedelta(days=1)  # Monday 22:00
    run_job(context_of(client).planner.key, "roll")  # type: ignore[union-attr]
    assert mornings(plan_of(client, bus, station, clock.now)) == days_at_five(2026, 12, 8, 9)
    clock.now = datetime(2026, 12, 31, 15, 0, tzinfo=UTC)  # 22:00 on New Year's Eve
    run_job(context_of(client).planner.key, "roll")  # type: ignore[union-attr]
    assert mornings(plan_of(client, bus, station, clock.now)) == days_at_five(2027, 1, 1, 9)


def test_a_failed_republish_is_left_as_a_persistent_job_and_retried(
    client: TestClient, bus: FlakyBus, clock: Clock
) -> None:
    station = register(client, "01273", id="cb-st-001")["station"]["id"]
    before = len(bus.on(topics.plan(station)))
    bus.down = True
    view = daily_speech(client, station)  # the approval itself succeeds
    assert view["state"] == "approved"
    retries = [job for job in jobs(client) if job.startswith("republish-retry-")]
    assert len(retries) == 1
    assert len(bus.on(topics.plan(station))) == before
    bus.down = False
    run_job(context_of(client).planner.key, "republish", [station])  # type: ignore[union-attr]
    assert mornings(plan_of(client, bus, station, clock.now)) == days_at_five(2026, 12, 7, 9)


def test_prerender_restores_speech_the_audio_store_lost(
    client: TestClient, bus: FlakyBus, clock: Clock
) -> None:
    station = register(client, "01273", id="cb-st-001")["station"]["id"]
    view = daily_speech(client, station)
    context = context_of(client)
    sha = plan_of(client, bus, station, clock.now).items[0].audio.sha256  # type: ignore[union-attr]
    assert context.planner is not None and context.planner.prerender() == 0
    context.store.path(sha).unlink()
    published = len(bus.on(topics.plan(station)))
    assert context.planner.prerender() == 1
    assert context.store.exists(sha)  # the same text and voice render to the same audio
    # Same text, same voice, same asset: the plan is unchanged, so nothing is republished.
    assert len(bus.on(topics.plan(station))) == published
    assert client.get(f"{API}/programmes/{view['id']}").json()["state"] == "approved"


def test_rolling_forward_republishes_only_stations_whose_window_gained_an_item(
    client: TestClient, bus: FlakyBus, clock: Clock
) -> None:
    station = register(client, "01273", id="cb-st-001")["station"]["id"]
    quiet = register(client, "01273", id="cb-st-002")["station"]["id"]
    daily_speech(client, station)  # 05:00 local every day, on cb-st-001 only
    planner = context_of(client).planner
    assert planner is not None
    counts = {s: len(bus.on(topics.plan(s))) for s in (station, quiet)}
    clock.now += timedelta(hours=1)  # Sun 23:00: nothing enters (the window ends Tue 15, 23:00)
    assert planner.roll_forward() == 0
    assert {s: len(bus.on(topics.plan(s))) for s in counts} == counts
    clock.now = datetime(2026, 12, 7, 22, 30, tzinfo=UTC)  # Tue 8 05:30: Wed 16, Thu 17 enter
    assert planner.roll_forward() == 1
    assert len(bus.on(topics.plan(station))) == counts[station] + 1
    assert len(bus.on(topics.plan(quiet))) == counts[quiet]
    assert mornings(plan_of(client, bus, station, clock.now))[-2:] == days_at_five(2026, 12, 16, 2)
    # Half a plan's lifetime on, every plan is renewed (stations must never hold an
    # expired one), whether or not anything entered.
    clock.now += timedelta(hours=36, minutes=1)
    assert planner.roll_forward() == 2
