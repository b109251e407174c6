"""Intrusion watch: a down-topic message the server did not issue raises an alarm.

The first part judges envelopes with the watch alone (no broker, no database). The
second runs the server's fleet side — link over TLS with its own credentials, ingest,
publisher — against a real Mosquitto on the generated configuration, and plays the
attacker with the *server's* credentials, as someone who stole them would.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from loaxa.broker import free_port
from loaxa.broker_config import BrokerOptions, load_station_accounts, write_broker_dir
from loaxa_protocol import (
    Command,
    Event,
    EventKind,
    Keyring,
    Plan,
    SigningKey,
    seal,
    topics,
)
from server.audit.models import AuditEntry
from server.db import make_engine, utcnow
from server.fleet.ingest import INTRUSION_KIND, Ingestor
from server.fleet.link import FleetLink
from server.fleet.watch import DownTopic, IntrusionWatch, parse_down_topic
from server.keys import ServerKeys
from server.models import StationEvent
from server.planning.publisher import PlanPublisher
from server.settings import Settings
from tests.integration.test_broker_security import (
    PW_A,
    A,
    B,
    GeneratedBroker,
    Peer,
    make_database,
    peer_pool,
    register,
    wait_until,
)

NOW = datetime(2025, 6, 2, 22, 0, tzinfo=UTC)
OURS = SigningKey.generate("plan", frozenset({"plan", "command"}))
THEIRS = SigningKey.generate("plan", frozenset({"plan", "command"}))
AREAS_OF_A = {A.station_id, "area:01273", "area:04"}


def plan_for(station_id: str, seq: int, key: SigningKey = OURS) -> bytes:
    plan = Plan(
        sender="server",
        seq=seq,
        issued_at=NOW,
        expires_at=NOW + timedelta(hours=72),
        to=station_id,
        station_id=station_id,
        horizon_until=NOW + timedelta(hours=48),
    )
    return seal(plan, key)


def command_for(station_id: str, seq: int, key: SigningKey = OURS) -> bytes:
    command = Command(
        sender="server",
        seq=seq,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        to=station_id,
        name="test_tone",
    )
    return seal(command, key)


def with_bad_signature(raw: bytes) -> bytes:
    envelope = json.loads(raw)
    sig = bytearray(base64.urlsafe_b64decode(envelope["sig"] + "=="))
    sig[0] ^= 1
    envelope["sig"] = base64.urlsafe_b64encode(bytes(sig)).decode().rstrip("=")
    return json.dumps(envelope).encode()


def addressees(target: DownTopic) -> set[str]:
    if target.scope == "area":
        return {f"area:{target.name}"}
    return AREAS_OF_A if target.name == A.station_id else {target.name}


@pytest.fixture
def watch() -> IntrusionWatch:
    return IntrusionWatch(lambda: Keyring.of(OURS), lambda: NOW, remember=3)


# ------------------------------------------------------------ the watch alone


def test_down_topics_are_recognised_and_up_topics_are_not() -> None:
    assert parse_down_topic(topics.plan("s1")) == DownTopic("station", "s1", "plan")
    assert parse_down_topic(topics.command("s1")) == DownTopic("station", "s1", "cmd")
    assert parse_down_topic("loaxa/v1/area/04/alert/x") == DownTopic("area", "04", "alert/x")
    for up in (topics.event("s1"), topics.health("s1"), topics.status("s1"), "loaxa/v1/x"):
        assert parse_down_topic(up) is None


def test_the_echo_of_what_the_server_published_is_its_own(watch: IntrusionWatch) -> None:
    raw = plan_for(A.station_id, 10, key=THEIRS)  # even bytes we could not verify
    watch.published(topics.plan(A.station_id), raw, retain=True)
    assert watch.inspect(topics.plan(A.station_id), raw, addressees) is None
    assert watch.intrusions == 0


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (topics.plan(A.station_id), plan_for(A.station_id, 10, key=THEIRS), "unknown_key"),
        (
            topics.plan(A.station_id),
            with_bad_signature(plan_for(A.station_id, 10)),
            "bad_signature",
        ),
        (topics.plan(A.station_id), b"not an envelope", "malformed"),
        (topics.plan(A.station_id), b"", "malformed"),
        (topics.plan(A.station_id), plan_for(B.station_id, 10), "wrong_station"),
        (topics.plan(A.station_id), command_for(A.station_id, 10), "wrong_topic"),
        ("loaxa/v1/area/04/alert", plan_for(A.station_id, 10), "wrong_station"),
    ],
    ids=["forged", "tampered", "garbage", "empty", "retargeted", "command-as-plan", "area"],
)
def test_anything_not_signed_by_us_for_this_topic_is_an_intrusion(
    watch: IntrusionWatch, topic: str, payload: bytes, reason: str
) -> None:
    found = watch.inspect(topic, payload, addressees)
    assert found is not None
    assert (found.topic, found.reason) == (topic, reason)
    assert found.sha256 == hashlib.sha256(payload).hexdigest()
    assert watch.intrusions == 1
    # the broker re-delivers a retained intrusion at every reconnect: still one alarm
    assert watch.inspect(topic, payload, addressees) is None
    assert watch.intrusions == 1


def test_a_plan_signed_by_us_before_a_restart_is_ours_until_our_own_echo_arrives(
    watch: IntrusionWatch,
) -> None:
    topic = topics.plan(A.station_id)
    before_restart, current = plan_for(A.station_id, 10), plan_for(A.station_id, 11)
    assert watch.inspect(topic, before_restart, addressees) is None  # retained copy at start
    watch.published(topic, current, retain=True)
    assert watch.inspect(topic, current, addressees) is None  # our echo
    replay = watch.inspect(topic, before_restart, addressees)  # someone re-sends the old one
    assert replay is not None and replay.reason == "replayed" and replay.seq == 10


def test_the_current_retained_plan_is_remembered_beyond_the_bounded_memory(
    watch: IntrusionWatch,
) -> None:
    topic = topics.plan(A.station_id)
    plan = plan_for(A.station_id, 10, key=THEIRS)  # unverifiable: only memory can vouch
    watch.published(topic, plan, retain=True)
    for seq in range(11, 15):  # remember=3: the plan's digest is evicted
        watch.published(topics.command(B.station_id), command_for(B.station_id, seq), retain=False)
    assert watch.inspect(topic, plan, addressees) is None


def test_an_up_topic_given_to_the_watch_is_a_routing_bug(watch: IntrusionWatch) -> None:
    with pytest.raises(ValueError, match="not a down-topic"):
        watch.inspect(topics.event(A.station_id), b"{}", addressees)


# ------------------------------------------------ the server against a broker


@dataclass
class WatchedServer:
    """The server's fleet side, wired as the app wires it, plus the watch."""

    engine: Engine
    keys: ServerKeys
    watch: IntrusionWatch
    link: FleetLink
    publisher: PlanPublisher

    def stop(self) -> None:
        self.link.stop()
        self.engine.dispose()


@dataclass
class Setup:
    broker: GeneratedBroker
    settings: Settings
    start_server: Callable[[], WatchedServer]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """Registered stations A and B, the generated broker, and a way to (re)start the server."""
    url = make_database(tmp_path)
    register(url, A, "01273")
    register(url, B, "01279")
    out = tmp_path / "broker"
    options = BrokerOptions(port=free_port(), tls_port=free_port(), run_as_user=getpass.getuser())
    write_broker_dir(out, load_station_accounts(url), options)
    broker = GeneratedBroker(out.resolve(), options.port, options.tls_port)
    broker.start()
    username, password = broker.server_credentials
    settings = Settings(
        data_dir=tmp_path,
        database_url=url,
        mqtt_host=broker.host,
        mqtt_port=broker.tls_port,  # the server proves it can use TLS and its own account
        mqtt_tls=True,
        mqtt_ca_file=out / "ca.crt",
        mqtt_username=username,
        mqtt_password=password,
        mqtt_client_id=f"loaxa-server-{uuid.uuid4().hex[:6]}",
        public_url="http://testserver",
        plan_refresh_min=0,
    )
    servers: list[WatchedServer] = []

    def start_server() -> WatchedServer:
        engine = make_engine(settings.db_url)
        keys = ServerKeys.load(settings)
        watch = IntrusionWatch(lambda: Keyring.of(keys.signing_key), utcnow)
        ingestor = Ingestor(engine, watch=watch)

        def republish() -> int:
            return publisher.republish_all()

        link = FleetLink(settings, ingestor.handle, on_connected=republish, watch=watch)
        publisher = PlanPublisher(engine, settings, keys, link)
        server = WatchedServer(engine, keys, watch, link, publisher)
        servers.append(server)
        link.start()
        assert link.wait_connected(10), broker.log_text()[-2000:]
        return server

    try:
        yield Setup(broker, settings, start_server)
    finally:
        for server in servers:
            server.stop()
        broker.stop()
        print(f"--- generated mosquitto log (tail) ---\n{broker.log_text()[-3000:]}")


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    with peer_pool() as make:
        yield make


def audit(engine: Engine, action: str) -> list[AuditEntry]:
    with Session(engine) as session:
        return list(session.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def intrusion_events(engine: Engine) -> list[StationEvent]:
    with Session(engine) as session:
        query = select(StationEvent).where(StationEvent.kind == INTRUSION_KIND)
        return list(session.exec(query).all())


def stolen_credential(setup: Setup, peers: Callable[..., Peer]) -> Peer:
    """A raw client logged in as the server, subscribed to every plan."""
    thief = peers(setup.broker, *setup.broker.server_credentials)
    assert not thief.connect().is_failure
    thief.subscribe(f"{topics.ROOT}/station/+/plan")
    return thief


def wait_for_area_alarm(engine: Engine, count: int) -> None:
    """Alarms are recorded in arrival order, so this also waits for everything before it."""
    wait_until(
        lambda: (
            len([e for e in audit(engine, "intrusion.detected") if e.object_type == "area"])
            >= count
        ),
        10,
        "the sentinel intrusion on the area topic",
    )


def test_the_servers_own_publishes_raise_no_alarm(setup: Setup, peers: Callable[..., Peer]) -> None:
    server = setup.start_server()
    thief = stolen_credential(setup, peers)
    thief.wait_for(topics.plan(A.station_id))  # the plans republished on connect
    with Session(server.engine) as session:
        server.publisher.publish_stations(session, [A.station_id, B.station_id])
    wait_until(lambda: len(thief.received) >= 4, 10, "the second round of plans")

    thief.publish(f"{topics.ROOT}/area/04/alert", b"sentinel")  # after everything above
    wait_for_area_alarm(server.engine, 1)
    assert intrusion_events(server.engine) == []
    assert [e.object_id for e in audit(server.engine, "intrusion.detected")] == ["04"]


def test_a_plan_forged_with_stolen_server_credentials_raises_an_alarm_for_the_station(
    setup: Setup, peers: Callable[..., Peer]
) -> None:
    server = setup.start_server()
    thief = stolen_credential(setup, peers)
    genuine_b = thief.wait_for(topics.plan(B.station_id))
    forged = plan_for(A.station_id, 2**40, key=THEIRS)
    tampered = with_bad_signature(command_for(B.station_id, 1, server.keys.signing_key))
    thief.publish(topics.plan(A.station_id), forged, retain=True)
    thief.publish(topics.plan(A.station_id), genuine_b)  # re-targeted: B's plan for A
    thief.publish(topics.command(B.station_id), tampered)

    wait_until(lambda: len(intrusion_events(server.engine)) >= 3, 10, "three alarms")
    events = intrusion_events(server.engine)
    assert [(e.station_id, e.reason) for e in events] == [
        (A.station_id, "unknown_key"),
        (A.station_id, "wrong_station"),
        (B.station_id, "bad_signature"),
    ]
    assert events[0].detail is not None and topics.plan(A.station_id) in events[0].detail
    entries = audit(server.engine, "intrusion.detected")
    assert [(e.actor_kind, e.object_type, e.object_id) for e in entries] == [
        ("system", "station", A.station_id),
        ("system", "station", A.station_id),
        ("system", "station", B.station_id),
    ]
    after = json.loads(entries[0].after or "{}")
    assert after["topic"] == topics.plan(A.station_id)
    assert after["reason"] == "unknown_key"
    assert after["sha256"] == hashlib.sha256(forged).hexdigest()


def test_after_a_restart_the_old_retained_plan_is_ours_but_replaying_it_is_not(
    setup: Setup, peers: Callable[..., Peer]
) -> None:
    first = setup.start_server()
    thief = stolen_credential(setup, peers)
    old_plan = thief.wait_for(topics.plan(A.station_id))
    first.stop()

    second = setup.start_server()  # sees the retained plans, then republishes
    wait_until(
        lambda: len([p for t, p in thief.received if t == topics.plan(A.station_id)]) >= 2,
        10,
        "the plan republished after the restart",
    )
    thief.publish(topics.plan(A.station_id), old_plan, retain=True)  # the Dallas attack
    wait_until(lambda: intrusion_events(second.engine), 10, "the replay alarm")
    thief.publish(f"{topics.ROOT}/area/04/alert", b"sentinel")
    wait_for_area_alarm(second.engine, 1)
    events = intrusion_events(second.engine)
    assert [(e.station_id, e.reason) for e in events] == [(A.station_id, "replayed")]


def test_a_station_refusing_a_command_is_written_to_the_audit_log(
    setup: Setup, peers: Callable[..., Peer]
) -> None:
    server = setup.start_server()
    station = peers(setup.broker, A.username, PW_A)
    assert not station.connect().is_failure
    rejected = Event(
        station_id=A.station_id,
        kind=EventKind.REJECTED,
        at=utcnow(),
        plan_seq=7,
        reason="replayed",
        detail="sequence 7 is not newer than 8",
    )
    station.publish(topics.event(A.station_id), rejected.model_dump_json().encode())
    entries = wait_until(
        lambda: audit(server.engine, "station.rejected_command"), 10, "the audit entry"
    )
    assert (entries[0].object_type, entries[0].object_id) == ("station", A.station_id)
    assert json.loads(entries[0].after or "{}")["reason"] == "replayed"
    with Session(server.engine) as session:
        kinds = session.exec(select(StationEvent.kind)).all()
    assert kinds == ["rejected"]  # in the station's event log as before
