"""Ingest workers on the generated production broker: shared subscriptions, acks after commit.

Real Mosquitto running what ``loaxa broker config`` writes (the workers' own read-only
account included), the real server with ``ingest_workers`` on, and workers in this
process (each one is what ``loaxa worker ingest`` runs in a process of its own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from sqlalchemy import func
from sqlmodel import Session, select

from loaxa.bench.swarm import HealthTemplate
from loaxa.broker import ProductionMosquitto
from loaxa.stack import LocalStack
from loaxa_protocol import Event, EventKind, topics
from node_firmware.config import NodeConfig
from server.fleet.worker import IngestWorker, shared
from server.health.models import HealthSample
from server.models import StationEvent
from server.settings import Settings

COMMUNE = "01273"
TIMEOUT_S = 20.0


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: ProductionMosquitto) -> Iterator[LocalStack]:
    with LocalStack.on_broker(
        tmp_path / "stack", production_mosquitto, settings_overrides={"ingest_workers": True}
    ) as running:
        yield running


def worker_settings(stack: LocalStack, broker: ProductionMosquitto) -> Settings:
    """What a worker process reads from LOAXA_*: the server's data and database, its own
    broker account (ingest.env)."""
    username, password = broker.ingest_credentials
    server = stack.context.settings
    return Settings(
        data_dir=server.data_dir,
        database_url=server.db_url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        mqtt_username=username,
        mqtt_password=password,
    )


def station_client(broker: ProductionMosquitto, config: NodeConfig) -> mqtt.Client:
    """A station's own account on the loopback listener (same accounts and ACL as TLS)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=config.station_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    client.username_pw_set(config.mqtt.username, config.mqtt.password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def event(station_id: str, n: int) -> bytes:
    return (
        Event(
            station_id=station_id,
            kind=EventKind.REJECTED,
            at=datetime.now(UTC),
            reason="test",
            detail=f"event {n}",
        )
        .model_dump_json()
        .encode()
    )


def counts(stack: LocalStack) -> tuple[int, int]:
    with Session(stack.context.engine) as session:
        samples = session.exec(select(func.count()).select_from(HealthSample)).one()
        events = session.exec(
            select(func.count()).select_from(StationEvent).where(StationEvent.reason == "test")
        ).one()
    return samples, events


def started(worker: IngestWorker, workers: list[IngestWorker]) -> IngestWorker:
    worker.start()
    workers.append(worker)
    assert worker.wait_subscribed(TIMEOUT_S), "the broker refused the shared subscriptions"
    return worker


@pytest.fixture
def workers() -> Iterator[list[IngestWorker]]:
    running: list[IngestWorker] = []
    yield running
    for worker in running:
        worker.stop()


def test_two_workers_share_the_stations_messages_and_store_every_one(
    stack: LocalStack, production_mosquitto: ProductionMosquitto, workers: list[IngestWorker]
) -> None:
    with stack.registering():
        configs = [stack.register_station(f"Cụm loa {n}", COMMUNE, 22.6, 106.2) for n in range(4)]
    settings = worker_settings(stack, production_mosquitto)
    first = started(IngestWorker(settings, index=0), workers)
    second = started(IngestWorker(settings, index=1), workers)
    clients = [station_client(production_mosquitto, config) for config in configs]
    health, events = 15, 10
    try:
        for config, client in zip(configs, clients, strict=True):
            template = HealthTemplate(config.station_id, 0)
            for _ in range(health):
                client.publish(topics.health(config.station_id), template.render(time.time()), 0)
            for n in range(events):
                client.publish(topics.event(config.station_id), event(config.station_id, n), 1)
        want = (health * len(configs), events * len(configs))
        wait_for(lambda: counts(stack) == want, f"{want} stored, have {counts(stack)}")
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
    # The broker shared the load: each worker stored some of both kinds.
    for worker in (first, second):
        assert worker.health.stats.stored > 0
        assert worker.ingestor.stats.applied > 0
    assert first.acked + second.acked == events * len(configs)
    # The server left health and events to the workers (it would have stored doubles).
    assert stack.context.health.stats.received == 0
    assert stack.context.ingestor.stats.received == 0

    # /api/v1/system sums what the workers report through the database.
    def reported() -> dict[str, Any]:
        return stack.api("GET", "/api/v1/system")["ingest_workers"]

    wait_for(
        lambda: reported()["totals"]["health"].get("stored") == health * len(configs),
        "the workers' counters in /api/v1/system",
    )
    assert reported()["enabled"] is True
    assert sorted(w["name"] for w in reported()["workers"]) == sorted([first.name, second.name])


def test_an_event_not_yet_committed_is_delivered_again_after_a_crash(
    stack: LocalStack, production_mosquitto: ProductionMosquitto, workers: list[IngestWorker]
) -> None:
    config = stack.register_station("Cụm loa", COMMUNE, 22.6, 106.2)
    settings = worker_settings(stack, production_mosquitto)
    doomed = IngestWorker(settings, index=7)
    held: list[Any] = []
    # The database write "never finishes": nothing is committed, so nothing is acked.
    doomed._write_until_stored = held.extend  # type: ignore[method-assign]
    doomed.start()
    assert doomed.wait_subscribed(TIMEOUT_S)
    client = station_client(production_mosquitto, config)
    try:
        for n in range(5):
            client.publish(topics.event(config.station_id), event(config.station_id, n), 1)
        wait_for(lambda: len(held) == 5, "the doomed worker to receive the events")
    finally:
        client.loop_stop()
        client.disconnect()
    # Dies without a word: its socket closes, no DISCONNECT, no acknowledgement.
    doomed._client._sock_close()  # type: ignore[attr-defined]
    doomed._client.loop_stop()
    doomed.health.stop()
    doomed._stopping.set()  # its counter thread dies with it (not after the test's database)
    assert counts(stack)[1] == 0

    # The same worker restarted (same client id, so the same session) gets them again.
    started(IngestWorker(settings, index=7), workers)
    wait_for(lambda: counts(stack)[1] == 5, f"5 events stored, have {counts(stack)[1]}")


def test_the_worker_account_may_only_read_health_and_events(
    production_mosquitto: ProductionMosquitto,
) -> None:
    """A stolen worker password neither reads plans nor publishes (the generated ACL)."""
    username, password = production_mosquitto.ingest_credentials
    got: list[str] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(username, password)
    client.on_message = lambda _c, _u, msg: got.append(msg.topic)
    granted: list[Any] = []
    client.on_subscribe = lambda _c, _u, _m, codes, _p: granted.extend(codes)
    client.connect(production_mosquitto.host, production_mosquitto.port)
    client.loop_start()
    try:
        client.subscribe([(shared(topics.ALL_HEALTH), 1), (topics.PLAN.every, 1)])
        wait_for(lambda: len(granted) == 2, "the SUBACK")
        assert not granted[0].is_failure
        # Mosquitto grants the subscription but never delivers what the ACL denies;
        # publish as the server a plan and a health report, and see only the latter.
        server = mqtt.Client(CallbackAPIVersion.VERSION2)
        server.username_pw_set(*production_mosquitto.server_credentials)
        server.connect(production_mosquitto.host, production_mosquitto.port)
        server.loop_start()
        server.publish(topics.plan("x1"), b"{}", 1).wait_for_publish(5)
        server.publish(topics.health("x1"), b"{}", 1).wait_for_publish(5)
        server.loop_stop()
        server.disconnect()
        wait_for(lambda: got == [topics.health("x1")], f"only the health report, got {got}")
        time.sleep(0.3)
        assert got == [topics.health("x1")]
    finally:
        client.loop_stop()
        client.disconnect()
