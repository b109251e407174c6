"""Roll-forward and plan-change cost for 1,000 stations × 5 daily programmes.

Real app, real SQLite, real signing; a counting bus instead of MQTT (the broker's share
is measured elsewhere). Prints the figures quoted in docs/programmes.md:

- the old roll-forward (republish every plan) against the new one (only stations whose
  window gained an item), in an hour when nothing enters and one when every station's
  05:00 bulletin enters;
- a plan change reaching all 1,000 stations (a province-wide programme approved).

Run: ``.venv/bin/pytest tests/integration/test_bench_roll.py -q -s -m slow``
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from server.app import create_app
from server.auth.permissions import Role
from server.models import Area, Station
from tests.audio_samples import make_audio
from tests.integration.auth_helpers import authenticate, bearer, context_of, make_token
from tests.integration.test_server_api import make_settings, upload

pytestmark = pytest.mark.slow

STATIONS = 1000
PROVINCE = "04"
HOURS = ("05:00", "06:00", "11:00", "17:00", "18:00")
API = "/api/v1"


@dataclass
class CountingBus:
    count: int = 0
    topics: set[str] = field(default_factory=set)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.count += 1
        self.topics.add(topic)

    def flush(self, timeout_s: float) -> None:
        """Nothing waits: publish kept it already."""


@dataclass
class Clock:
    now: datetime = datetime(2026, 12, 7, 0, 30, tzinfo=UTC)  # Mon 07:30 local

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[TestClient, CountingBus, Clock]]:
    bus, clock = CountingBus(), Clock()
    app = create_app(make_settings(tmp_path), bus=bus, clock=clock)
    with TestClient(app) as client:
        client = authenticate(client)
        with Session(context_of(client).engine) as session:
            communes = session.exec(
                select(Area.code).where(col(Area.code).startswith("0")).order_by(col(Area.code))
            ).all()
            communes = [c for c in communes if len(c) == 5] or [PROVINCE]
            for number in range(STATIONS):
                session.add(
                    Station(
                        id=f"rf-{number:04d}",
                        name=f"Cụm loa {number}",
                        area_code=communes[number % len(communes)],
                        latitude=22.6,
                        longitude=106.2,
                        mqtt_username=f"rf-{number:04d}",
                        mqtt_password_hash="x",
                        created_at=clock.now,
                    )
                )
            session.commit()
        yield client, bus, clock


def daily(client: TestClient, key: str, at: str, audio_id: int, approve: bool = True) -> int:
    """A daily bulletin for the whole province, submitted and (unless told) approved."""
    body = {
        "key": key,
        "title": f"Bản tin {at}",
        "area": PROVINCE,
        "start": f"2026-12-08T{at}:00",
        "rrule": "FREQ=DAILY",
        "targets": {"areas": [PROVINCE]},
        "items": [{"kind": "audio", "audio_id": audio_id}],
    }
    created = client.post(f"{API}/programmes", json=body)
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    assert client.post(f"{API}/programmes/{pid}/submit").status_code == 200
    if approve:
        approve_as_province(client, pid)
    return int(pid)


def approve_as_province(client: TestClient, pid: int) -> None:
    approver = bearer(make_token(context_of(client).engine, "duyet", (Role.APPROVER, PROVINCE)))
    approved = client.post(f"{API}/programmes/{pid}/approve", headers=approver)
    assert approved.status_code == 200, approved.text


def session_of(client: TestClient) -> Session:
    return Session(context_of(client).engine)


def timed(job: object) -> tuple[float, object]:
    started = time.perf_counter()
    result = job()  # type: ignore[operator]
    return time.perf_counter() - started, result


def test_roll_forward_for_1000_stations(world: tuple[TestClient, CountingBus, Clock]) -> None:
    client, bus, clock = world
    context = context_of(client)
    audio = upload(client, make_audio("wav", 2.0), "ban-tin.wav")
    for number, at in enumerate(HOURS[:4]):
        daily(client, f"bt-{number}", at, audio["id"])
    publisher = context.publisher
    planner = context.planner
    assert planner is not None
    station_ids = [f"rf-{number:04d}" for number in range(STATIONS)]

    # A plan change reaching every station: the fifth daily programme approved.
    fifth = daily(client, "bt-4", HOURS[4], audio["id"], approve=False)
    before = bus.count
    change_s, _ = timed(lambda: approve_as_province(client, fifth))
    assert bus.count - before == STATIONS
    publish_s, _ = timed(lambda: publisher.publish_stations(session_of(client), station_ids))

    old_s, old = timed(publisher.republish_all)
    assert old == STATIONS

    clock.now += timedelta(hours=1)  # 08:30: no 08:xx item anywhere enters the window
    quiet_s, quiet = timed(planner.roll_forward)
    assert quiet == 0

    clock.now = datetime(2026, 12, 7, 22, 30, tzinfo=UTC)  # Tue 05:30: Thu 05:00 enters
    busy_s, busy = timed(planner.roll_forward)
    assert busy == STATIONS

    plans = bus.count
    again_s, again = timed(planner.roll_forward)  # the same instant again: nothing new
    assert again == 0 and bus.count == plans
    print(
        f"\n1,000 stations x 5 daily programmes: approve request reaching all {change_s:.2f} s, "
        f"publishing all {publish_s:.2f} s; roll-forward before (republish all) {old_s:.2f} s; "
        f"after: quiet hour {quiet_s:.3f} s (0 plans), hour with an item entering "
        f"{busy_s:.2f} s ({busy} plans), again at once {again_s:.3f} s (0 plans)"
    )
