"""Station health end to end: a real Mosquitto, the real app, stations made of raw paho.

The broker runs the configuration ``loaxa broker config`` generates: each station signs
in with the account its registration returned, and the ACL lets it write only its own
up-topics, as in the field.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, func, select

from loaxa.broker import ProductionMosquitto
from loaxa_protocol import Event, EventKind, Status, StatusState, topics
from server.health.models import HealthSample
from tests.brokers import MqttProbe
from tests.integration.test_server_fleet import (
    context_of,
    running_server,
    settings_for,
    wait_until,
)

STATIONS = ("cb-st-001", "cb-st-002")
ProbeFactory = Callable[..., MqttProbe]


def heartbeat(station_id: str, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "health",
        "station_id": station_id,
        "at": datetime.now(UTC).isoformat(),
        "agent_version": "0.3.0",
        "uptime_s": 120.0,
        "amp_on": False,
        "relay_ok": True,
        "disk_free_bytes": 6 * 10**9,
        "disk_total_bytes": 8 * 10**9,
        "cpu_temp_c": 51.0,
    }
    body.update(fields)
    return json.dumps(body).encode()


def register(client: TestClient, *station_ids: str) -> dict[str, str]:
    """Register through the API; each station's broker password, by station id."""
    passwords = {}
    for station_id in station_ids:
        response = client.post(
            "/api/v1/stations",
            json={
                "id": station_id,
                "name": "Cụm loa",
                "area_code": "01273",
                "latitude": 22.6,
                "longitude": 106.2,
            },
        )
        assert response.status_code == 201, response.text
        passwords[station_id] = response.json()["mqtt"]["password"]
    return passwords


def status_of(client: TestClient, station_id: str) -> str:
    return str(client.get(f"/api/v1/stations/{station_id}").json()["status"])


def alarms_of(client: TestClient, station_id: str, state: str | None = None) -> list[Any]:
    params = {"station_id": station_id, **({"state": state} if state else {})}
    response = client.get("/api/v1/alarms", params=params)
    assert response.status_code == 200, response.text
    return list(response.json())


def open_kinds(client: TestClient, station_id: str) -> set[str]:
    return {a["kind"] for a in alarms_of(client, station_id, "open")}


@pytest.fixture
def passwords() -> dict[str, str]:
    """Each registered station's broker password (filled by the ``server`` fixture)."""
    return {}


@pytest.fixture
def server(
    tmp_path: Path, production_mosquitto: ProductionMosquitto, passwords: dict[str, str]
) -> Iterator[TestClient]:
    username, password = production_mosquitto.server_credentials
    settings = settings_for(
        tmp_path,
        production_mosquitto,
        mqtt_username=username,
        mqtt_password=password,
        offline_after_min=0.05,
        alarm_offline_min=0.05,
        health_check_interval_s=0.3,
        health_batch_interval_ms=50,
    )
    with running_server(settings) as client:
        passwords.update(register(client, *STATIONS))
        production_mosquitto.load_database(settings.db_url)  # `loaxa broker config` + SIGHUP
        yield client


@pytest.fixture
def as_station(
    production_mosquitto: ProductionMosquitto, passwords: dict[str, str], mqtt_probe: ProbeFactory
) -> Callable[[str], MqttProbe]:
    """``as_station(id)``: a raw client signed in with that station's own account."""

    def connect(station_id: str) -> MqttProbe:
        return mqtt_probe(
            production_mosquitto,
            topics=topics.plan(station_id),
            username=station_id,
            password=passwords[station_id],
        )

    return connect


def test_a_station_killed_without_goodbye_turns_offline_and_raises_an_alarm(
    server: TestClient, production_mosquitto: ProductionMosquitto, passwords: dict[str, str]
) -> None:
    station = STATIONS[0]
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{station}-{uuid.uuid4().hex[:4]}")
    will = Status(station_id=station, state=StatusState.OFFLINE).model_dump_json(exclude_none=True)
    client.will_set(topics.status(station), will, qos=1, retain=True)
    connected: list[bool] = []
    client.on_connect = lambda c, u, f, rc, p: connected.append(not rc.is_failure)
    client.username_pw_set(station, passwords[station])
    client.connect(production_mosquitto.host, production_mosquitto.port, keepalive=60)
    while not connected:
        client.loop(timeout=0.1)
    online = Status(station_id=station, state=StatusState.ONLINE, at=datetime.now(UTC))
    client.publish(topics.status(station), online.model_dump_json(), qos=1, retain=True)
    client.publish(topics.health(station), heartbeat(station), qos=1)
    last_said = time.monotonic()  # the server cannot have heard it later than this
    for _ in range(5):
        client.loop(timeout=0.1)
    wait_until(lambda: status_of(server, station) == "online", 5, "online")

    sock = client.socket()
    assert sock is not None
    sock.close()  # the process is gone: no DISCONNECT, the broker publishes the will

    wait_until(lambda: status_of(server, station) == "offline", 5, "offline from the last will")
    (alarm,) = wait_until(lambda: alarms_of(server, station, "open"), 10, "the offline alarm")
    assert (alarm["kind"], alarm["severity"]) == ("offline", "critical")
    # alarm_offline_min: 3 s after the station was last heard (its heartbeat; how long
    # the server then took to show it online does not count)
    assert time.monotonic() - last_said > 2
    assert alarm["detail"].startswith("unreachable since")
    assert status_of(server, STATIONS[1]) == "unknown"  # never heard: no alarm either
    assert alarms_of(server, STATIONS[1]) == []


def test_a_station_that_falls_silent_turns_offline(
    server: TestClient, as_station: Callable[[str], MqttProbe]
) -> None:
    probe = as_station(STATIONS[1])
    probe.publish(topics.health(STATIONS[1]), heartbeat(STATIONS[1]))
    wait_until(lambda: status_of(server, STATIONS[1]) == "online", 5, "online")
    # No will (the probe stays connected): silence alone, past offline_after_min = 3 s.
    wait_until(lambda: status_of(server, STATIONS[1]) == "offline", 10, "offline by silence")


def test_amplifier_faults_from_heartbeats_and_events_raise_an_amplifier_alarm(
    server: TestClient, as_station: Callable[[str], MqttProbe]
) -> None:
    a, b = STATIONS
    probe = as_station(a)
    probe.publish(
        topics.health(a),
        heartbeat(
            a,
            amp_on=True,
            playing_item="b-7",
            amp_current_ma=0.0,
            amp_fault="no_current_while_playing",
        ),
    )
    wait_until(lambda: "amp_fault" in open_kinds(server, a), 5, "the amplifier alarm")
    assert status_of(server, a) == "degraded"
    (alarm,) = alarms_of(server, a, "open")
    assert "no_current_while_playing" in alarm["detail"]

    probe = as_station(b)
    probe.publish(topics.health(b), heartbeat(b))
    wait_until(lambda: status_of(server, b) == "online", 5, "b online")
    fault = Event(
        station_id=b, kind=EventKind.RELAY_FAULT, at=datetime.now(UTC), detail="no readback"
    )
    probe.publish(topics.event(b), fault.model_dump_json(exclude_none=True))
    wait_until(lambda: "amp_fault" in open_kinds(server, b), 5, "the alarm from the event")
    assert status_of(server, b) == "degraded"


def test_a_low_disk_heartbeat_raises_a_disk_alarm_and_a_normal_one_resolves_it(
    server: TestClient, as_station: Callable[[str], MqttProbe]
) -> None:
    station = STATIONS[0]
    probe = as_station(station)
    probe.publish(topics.health(station), heartbeat(station, disk_free_bytes=4 * 10**8))
    wait_until(lambda: open_kinds(server, station) == {"disk_low"}, 5, "the disk alarm")
    assert status_of(server, station) == "degraded"
    probe.publish(topics.health(station), heartbeat(station, disk_free_bytes=3 * 10**8))
    time.sleep(0.3)
    assert len(alarms_of(server, station)) == 1  # the same condition: no duplicate

    probe.publish(topics.health(station), heartbeat(station))
    wait_until(lambda: not open_kinds(server, station), 5, "the disk alarm resolved")
    (alarm,) = alarms_of(server, station)
    assert alarm["state"] == "resolved" and alarm["resolved_at"] is not None
    assert status_of(server, station) == "online"


def test_a_flood_from_one_station_is_limited_while_the_other_is_stored_in_full(
    server: TestClient, as_station: Callable[[str], MqttProbe]
) -> None:
    flooder, quiet = STATIONS
    flooding, calm = as_station(flooder), as_station(quiet)
    for n in range(120):
        flooding.client.publish(
            topics.health(flooder), heartbeat(flooder, uptime_s=float(n)), qos=1
        )
        if n % 12 == 0:
            calm.publish(topics.health(quiet), heartbeat(quiet, uptime_s=float(n)))
    calm.publish(topics.health(quiet), heartbeat(quiet))  # the 11th

    health = context_of(server).health
    wait_until(lambda: health.stats.received >= 131, 10, "every report at the server")
    assert health.drain(10)
    with Session(context_of(server).engine) as session:

        def stored(station_id: str) -> int:
            query = select(func.count()).where(HealthSample.station_id == station_id)
            return int(session.exec(query).one())

        assert stored(quiet) == 11
        assert stored(flooder) == 20  # health_rate_limit per 10 s
    counters = server.get("/api/v1/system").json()["health"]
    assert counters["dropped_rate_limited"] == 100
    assert counters["stored"] == 31 and counters["batches"] >= 1


def test_the_chart_endpoint_returns_the_aggregates_of_known_samples(server: TestClient) -> None:
    station = STATIONS[0]
    context = context_of(server)
    hour = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    known = [(1, 40.0), (2, 44.0), (31, 60.0), (65, 30.0)]  # minutes after ``hour``
    with Session(context.engine) as session:
        for minute, temp in known:
            at = hour + timedelta(minutes=minute)
            session.add(HealthSample(station_id=station, at=at, cpu_temp_c=temp))
        session.commit()
    context.health.run_maintenance()  # aggregates the complete hours

    week = server.get(f"/api/v1/stations/{station}/health", params={"range": "7d"})
    assert week.status_code == 200, week.text
    body = week.json()
    assert body["source"] == "hourly" and body["bucket_s"] == 3600
    points = [
        (p["t"], p["min"], p["avg"], p["max"], p["count"]) for p in body["series"]["cpu_temp_c"]
    ]
    assert points == [
        (hour.isoformat().replace("+00:00", "Z"), 40.0, 48.0, 60.0, 3),
        ((hour + timedelta(hours=1)).isoformat().replace("+00:00", "Z"), 30.0, 30.0, 30.0, 1),
    ]
    assert body["series"]["disk_free_pct"] == []

    day = server.get(
        f"/api/v1/stations/{station}/health", params={"range": "24h", "metric": "cpu_temp_c"}
    ).json()
    assert list(day["series"]) == ["cpu_temp_c"] and day["bucket_s"] == 300
    buckets = [(p["min"], p["avg"], p["max"]) for p in day["series"]["cpu_temp_c"]]
    assert buckets == [(40.0, 42.0, 44.0), (60.0, 60.0, 60.0), (30.0, 30.0, 30.0)]

    bad = server.get(f"/api/v1/stations/{station}/health", params={"metric": "fan_rpm"})
    assert bad.status_code == 422
    assert (
        server.get(f"/api/v1/stations/{station}/health", params={"range": "1y"}).status_code == 422
    )
