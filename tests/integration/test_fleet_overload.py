"""A database that cannot keep up, on real parts: the real server, a real Mosquitto and
a real SQLite whose write lock another process-like connection holds.

While the ingest is stuck, the fleet queue must stay within ``fleet_queue_max``: the
oldest heartbeats are shed and counted, station events spill to disk and none is lost;
once the database answers again, every event is stored in the order it was sent, and
``GET /api/v1/system`` tells the technician what happened.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, func, select

from loaxa.broker import MosquittoBroker
from loaxa_protocol import Event, EventKind, topics
from server.health.models import HealthSample
from server.models import StationEvent
from tests.integration.test_server_fleet import (
    STATION,
    ProbeFactory,
    context_of,
    register_and_schedule,
    running_server,
    settings_for,
    wait_until,
)

LIMIT = 100


def heartbeat(n: int) -> bytes:
    return json.dumps(
        {
            "type": "health",
            "station_id": STATION,
            "at": datetime.now(UTC).isoformat(),
            "agent_version": "0.1.0",
            "uptime_s": float(n),
        }
    ).encode()


def played(n: int) -> bytes:
    event = Event(station_id=STATION, kind=EventKind.PLAYED, at=datetime.now(UTC), detail=f"#{n}")
    return event.model_dump_json(exclude_none=True).encode()


@pytest.fixture
def server(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[TestClient]:
    # SQLite on purpose, whatever the run's database: the test stalls the ingest with
    # SQLite's write lock (a stuck PostgreSQL would need a lock of another kind).
    settings = settings_for(
        tmp_path, mosquitto, fleet_queue_max=LIMIT, health_rate_limit=10_000,
        database_url=f"sqlite:///{tmp_path / 'loaxa.db'}",
    )  # fmt: skip
    with running_server(settings) as client:
        register_and_schedule(client)
        yield client


def queue_stats(client: TestClient) -> dict[str, Any]:
    link = context_of(client).link
    assert link is not None
    return link.queue_stats()


def stored_events(client: TestClient) -> list[str]:
    with Session(context_of(client).engine) as session:
        query = select(StationEvent.detail).order_by(col(StationEvent.id))
        return [d or "" for d in session.exec(query).all()]


def stored_heartbeats(client: TestClient) -> int:
    with Session(context_of(client).engine) as session:
        return int(session.exec(select(func.count()).select_from(HealthSample)).one())


def test_a_stuck_database_sheds_heartbeats_and_loses_no_event(
    server: TestClient, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory
) -> None:
    station = mqtt_probe(mosquitto, topics=topics.plan(STATION))
    database = context_of(server).engine.url.database
    assert database is not None
    blocker = sqlite3.connect(database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the write lock: every writer now waits
    try:
        station.publish(topics.event(STATION), played(0))
        ingest = context_of(server).ingestor.stats
        wait_until(lambda: ingest.received == 1, 5, "the ingest to take it alone")
        # The ingest is stuck on that first event; the fleet keeps talking.
        for n in range(150):
            station.publish(topics.health(STATION), heartbeat(n), qos=0)
        for n in range(1, 131):
            station.publish(topics.event(STATION), played(n))
        for n in range(150, 170):
            station.publish(topics.health(STATION), heartbeat(n), qos=0)

        def everything_received() -> bool:
            stats = queue_stats(server)
            return bool(stats["queued"] + stats["dropped"].get("health", 0) == 300)

        wait_until(everything_received, 10, "all 300 messages at the server")
        during = queue_stats(server)
        assert during["queued"] - during["spilled_now"] <= LIMIT  # memory stays bounded
        assert during["spilled_now"] == 30  # 130 events: 100 in memory, 30 on disk
        assert during["dropped"] == {"health": 170}  # every heartbeat made way for events
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    expected = [f"#{n}" for n in range(131)]
    wait_until(lambda: len(stored_events(server)) == len(expected), 30, "every event stored")
    assert stored_events(server) == expected  # all of them, in the order they were sent

    # Back to normal: new heartbeats are stored again.
    for n in range(170, 180):
        station.publish(topics.health(STATION), heartbeat(n), qos=0)
    wait_until(lambda: stored_heartbeats(server) == 10, 10, "the new heartbeats")

    system = server.get("/api/v1/system").json()
    fleet = system["queues"]["fleet_ingest"]
    assert (fleet["queued"], fleet["max"], fleet["spilled_now"]) == (0, LIMIT, 0)
    assert fleet["peak"] <= LIMIT
    assert fleet["spilled_total"] == 30
    assert fleet["dropped"] == {"health": 170}
    assert (fleet["retried"], fleet["failed"]) == (0, 0)
    assert system["queues"]["health_writer"]["dropped"] == {}
    assert system["queues"]["alarm_notifier"]["max"] == 1000
