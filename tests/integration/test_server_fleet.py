"""The server's MQTT side against a real Mosquitto: retained plans out, station reports in."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session, select

from loaxa.broker import MosquittoBroker
from loaxa_protocol import (
    Event,
    EventKind,
    Keyring,
    Plan,
    Status,
    StatusState,
    Verified,
    open_envelope,
    topics,
)
from server.app import create_app
from server.context import ServerContext
from server.models import Station
from server.passwords import mosquitto_password_line
from server.settings import Settings
from tests.audio_samples import make_audio
from tests.brokers import MqttProbe
from tests.integration.auth_helpers import authenticate

STATION = "cb-st-001"

ProbeFactory = Callable[..., MqttProbe]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def settings_for(tmp_path: Path, broker: MosquittoBroker, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "server",
        "mqtt_host": broker.host,
        "mqtt_port": broker.port,
        "mqtt_client_id": f"loaxa-server-{uuid.uuid4().hex[:6]}",
        "public_url": "http://testserver",
        "plan_refresh_min": 0,
        **overrides,
    }
    return Settings(**values)


@contextmanager
def running_server(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        link = context_of(client).link
        assert link is not None
        assert link.wait_connected(10), "server did not connect to the broker"
        yield authenticate(client)


def context_of(client: TestClient) -> ServerContext:
    context: ServerContext = client.app.state.context  # type: ignore[attr-defined]
    return context


@pytest.fixture
def server(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[TestClient]:
    with running_server(settings_for(tmp_path, mosquitto)) as client:
        yield client


def register_and_schedule(
    client: TestClient, minutes: float = 30
) -> tuple[dict[str, Any], dict[str, Any]]:
    registered = client.post(
        "/api/v1/stations",
        json={
            "id": STATION,
            "name": "Cụm loa",
            "area_code": "01273",
            "latitude": 22.6,
            "longitude": 106.2,
        },
    )
    assert registered.status_code == 201, registered.text
    audio = client.post("/api/v1/audio", files={"file": ("ban-tin.wav", make_audio("wav", 1.0))})
    assert audio.status_code == 201, audio.text
    start_at = datetime.now(UTC) + timedelta(minutes=minutes)
    broadcast = client.post(
        "/api/v1/broadcasts",
        json={
            "audio_id": audio.json()["id"],
            "start_at": start_at.isoformat(),
            "station_ids": [STATION],
        },
    )
    assert broadcast.status_code == 201, broadcast.text
    return registered.json(), broadcast.json()


def opened_plan(raw: bytes, registered: dict[str, Any]) -> Plan:
    keyring = Keyring()
    for key in registered["trusted_keys"]:
        keyring.add(key["kid"], key["public_key"], set(key["purposes"]))
    opened = open_envelope(raw, keyring, datetime.now(UTC), {STATION})
    assert isinstance(opened, Verified), opened
    assert isinstance(opened.message, Plan)
    return opened.message


def report(probe: MqttProbe, kind: EventKind, item_id: str | None, **fields: Any) -> None:
    event = Event(station_id=STATION, kind=kind, at=datetime.now(UTC), item_id=item_id, **fields)
    probe.publish(topics.event(STATION), event.model_dump_json(exclude_none=True), qos=1)


def state_of(client: TestClient, broadcast_id: int) -> str:
    return str(client.get(f"/api/v1/broadcasts/{broadcast_id}").json()["targets"][0]["state"])


def test_a_plan_is_retained_for_a_station_that_subscribes_later(
    server: TestClient, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory
) -> None:
    early = mqtt_probe(mosquitto, topics=topics.plan(STATION))
    registered, broadcast = register_and_schedule(server)
    early.wait_for(timeout=5)  # the broker has the plan now
    late = mqtt_probe(mosquitto, topics=topics.plan(STATION))  # subscribes after the publish
    received = late.wait_for(lambda m: m.retain, timeout=5)
    assert received.qos == 1
    plan = opened_plan(received.payload, registered)
    assert [item.item_id for item in plan.items] == [f"b-{broadcast['id']}"]


def test_station_reports_published_over_mqtt_update_the_broadcast(
    server: TestClient, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory
) -> None:
    _registered, broadcast = register_and_schedule(server)
    station = mqtt_probe(mosquitto, topics=topics.plan(STATION))
    item = f"b-{broadcast['id']}"

    report(station, EventKind.PLAN_ACCEPTED, item)
    wait_until(lambda: state_of(server, broadcast["id"]) == "delivered", 5, "delivered")
    started = datetime.now(UTC)
    report(station, EventKind.PLAYING, item, started_at=started)
    report(
        station,
        EventKind.PLAYED,
        item,
        started_at=started,
        finished_at=started + timedelta(seconds=1),
    )
    wait_until(lambda: state_of(server, broadcast["id"]) == "played", 5, "played")
    report(
        station, EventKind.REJECTED, None, reason="bad_signature", detail="signature does not match"
    )
    station.publish(topics.event(STATION), b"{garbage", qos=1)
    online = Status(station_id=STATION, state=StatusState.ONLINE, at=datetime.now(UTC))
    station.publish(topics.status(STATION), online.model_dump_json(), qos=1, retain=True)

    def rejections() -> list[dict[str, Any]]:
        events = server.get(f"/api/v1/stations/{STATION}/events").json()
        return [e for e in events if e["kind"] == "rejected"]

    (rejected,) = wait_until(rejections, 5, "the rejection in the event log")
    assert rejected["reason"] == "bad_signature"
    wait_until(
        lambda: server.get(f"/api/v1/stations/{STATION}").json()["status"] == "online", 5, "online"
    )
    stats = server.get("/api/v1/system").json()
    assert stats["mqtt"]["connected"] is True
    assert stats["ingest"]["malformed"] == 1
    view = server.get(f"/api/v1/broadcasts/{broadcast['id']}").json()
    assert datetime.fromisoformat(view["targets"][0]["started_at"]) == started


def test_after_a_broker_restart_the_server_reconnects_and_restores_retained_plans(
    server: TestClient, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory
) -> None:
    registered, broadcast = register_and_schedule(server)
    link = context_of(server).link
    assert link is not None
    mosquitto.stop()  # no persistence: the retained plan is gone with it
    wait_until(lambda: not link.connected, 5, "the link to notice the outage")
    mosquitto.start()
    assert link.wait_connected(15)

    # The republish may reach this probe live or as the retained copy, depending on who
    # was first after the restart; a second probe then proves that it is retained.
    fresh = mqtt_probe(mosquitto, topics=topics.plan(STATION))
    fresh.wait_for(timeout=10)
    later = mqtt_probe(mosquitto, topics=topics.plan(STATION))
    plan = opened_plan(later.wait_for(lambda m: m.retain, timeout=5).payload, registered)
    assert [item.item_id for item in plan.items] == [f"b-{broadcast['id']}"]
    # ...and station reports flow again on the new connection.
    report(fresh, EventKind.PLAN_ACCEPTED, f"b-{broadcast['id']}")
    wait_until(lambda: state_of(server, broadcast["id"]) == "delivered", 5, "delivered")


def test_events_sent_while_the_server_was_down_arrive_when_it_returns(
    tmp_path: Path, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory
) -> None:
    """A persistent session: the broker keeps QoS 1 station events for the server."""
    settings = settings_for(tmp_path, mosquitto)
    with running_server(settings) as client:
        _registered, broadcast = register_and_schedule(client)
    station = mqtt_probe(mosquitto, topics=topics.plan(STATION))
    report(station, EventKind.PLAN_ACCEPTED, f"b-{broadcast['id']}")
    with running_server(settings) as client:
        wait_until(lambda: state_of(client, broadcast["id"]) == "delivered", 5, "the queued event")


def test_registered_credentials_work_in_a_mosquitto_password_file(
    server: TestClient, mosquitto_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    registered, _broadcast = register_and_schedule(server)
    with Session(context_of(server).engine) as session:
        rows = session.exec(select(Station)).all()
        lines = [mosquitto_password_line(s.mqtt_username, s.mqtt_password_hash) for s in rows]
    password_file = tmp_path / "passwd"
    password_file.write_text("\n".join(lines) + "\n")
    password_file.chmod(0o600)
    broker = mosquitto_factory()
    broker.extra_config = f"password_file {password_file}"
    broker.stop()
    broker.start()

    def connect(password: str) -> bool:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cred-{uuid.uuid4().hex[:6]}")
        client.username_pw_set(registered["mqtt"]["username"], password)
        results: list[bool] = []
        client.on_connect = lambda c, u, f, rc, p: results.append(not rc.is_failure)
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            wait_until(lambda: results, 5, "CONNACK")
        finally:
            client.disconnect()
            client.loop_stop()
        return results[0]

    assert connect(registered["mqtt"]["password"]) is True
    assert connect("not-the-password") is False


def test_a_publish_is_flushed_once_the_broker_holds_it_and_never_waits_past_the_timeout(
    server: TestClient, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory
) -> None:
    """The publisher waits on ``flush`` so paho's thread sends the plans at once; a
    broker that does not answer must not hold a broadcast longer than the timeout."""
    link = context_of(server).link
    assert link is not None and mosquitto.pid is not None
    topic = topics.plan(STATION)
    link.publish(topic, b"first", qos=1, retain=True)
    began = time.monotonic()
    link.flush(5.0)
    assert time.monotonic() - began < 1.0, "a live broker acknowledges at once"
    assert mqtt_probe(mosquitto, topics=topic).wait_for(lambda m: m.retain).payload == b"first"

    os.kill(mosquitto.pid, signal.SIGSTOP)  # alive, connected, silent
    try:
        link.publish(topic, b"second", qos=1, retain=True)
        began = time.monotonic()
        link.flush(0.5)
        waited = time.monotonic() - began
    finally:
        os.kill(mosquitto.pid, signal.SIGCONT)
    assert 0.5 <= waited < 2.0, f"flush waited {waited:.2f} s for a silent broker"
    late = mqtt_probe(mosquitto, topics=topic)
    assert late.wait_for(lambda m: m.retain, timeout=5).payload == b"second"
