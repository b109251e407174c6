"""Every topic of the protocol under the ACL `loaxa broker config` generates, on a real broker.

The topics come from the protocol's own table (:data:`loaxa_protocol.topics.TOPICS`), not
from a list written here: a topic added to the protocol is checked by these tests the day
it is added. Three stations registered in the server's database — two communes of Cao
Bằng and a ward of Hà Nội — get their accounts and the ACL from the generator, exactly as
the CLI writes them (the first test compares), and connect over TLS as in the field.

What each test proves, for every station and every topic of a direction:

- down (server → station) and area (server → an area's subtree): what the server
  publishes reaches the station it names, or every station whose area or ancestor it
  names, and no other station, whatever it subscribes to;
- up (station → server): what a station publishes on its own topic reaches the server;
  the same publish by any other station, and any publish by a station on a down or area
  topic (its own included), is dropped; so is a last will set on another station's
  status topic.

Mosquitto drops a refused publish or delivery silently, so every "nothing arrived" is
proved by a permitted message sent after the refused ones on the same connection: once
it has arrived, the refused ones would have too.
"""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlmodel import Session
from typer.testing import CliRunner

from loaxa.broker import ProductionMosquitto
from loaxa.cli import app
from loaxa_protocol import topics
from loaxa_protocol.topics import TOPICS, Direction
from server.areas import ancestry, seed_areas
from server.db import create_tables, make_engine
from server.models import Station
from server.passwords import hash_password, new_password
from tests.brokers import running_production_mosquitto
from tests.integration.test_broker_security import Peer, peer_pool, wait_until

# (station id, area): two communes of one province, and a ward of another province.
PLACES = (("cb-a", "01273"), ("cb-b", "01279"), ("hn-c", "00070"))
SETTLE_S = 0.3
"""Extra wait after the control message, for anything that would wrongly follow it."""


@dataclass(frozen=True)
class Registered:
    station_id: str
    password: str
    areas: tuple[str, ...]
    """its area and every ancestor, as the server's database says"""


@dataclass
class Fleet:
    broker: ProductionMosquitto
    database_url: str
    stations: list[Registered]

    @property
    def area_codes(self) -> list[str]:
        return sorted({code for station in self.stations for code in station.areas})


def register_stations(database_url: str) -> list[Registered]:
    """Station rows as ``POST /api/v1/stations`` stores them (the hash, never the password)."""
    engine = make_engine(database_url)
    create_tables(engine)
    registered = []
    with Session(engine) as session:
        seed_areas(session, ["04", "01"])
        for station_id, area in PLACES:
            password = new_password()
            session.add(
                Station(
                    id=station_id,
                    name=station_id,
                    area_code=area,
                    latitude=21.0,
                    longitude=106.0,
                    mqtt_username=station_id,
                    mqtt_password_hash=hash_password(password),
                )
            )
            registered.append(Registered(station_id, password, tuple(ancestry(session, area))))
        session.commit()
    engine.dispose()
    return registered


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("topic-acl")
    database_url = f"sqlite:///{tmp / 'loaxa.db'}"
    stations = register_stations(database_url)
    with running_production_mosquitto(tmp / "broker") as broker:
        broker.load_database(database_url)
        yield Fleet(broker, database_url, stations)
        print(f"--- generated mosquitto log (tail) ---\n{broker.log_text()[-3000:]}")


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    with peer_pool() as make:
        yield make


def connect(make: Callable[..., Peer], fleet: Fleet, station: Registered | None) -> Peer:
    """The server on its loopback listener, or a station over TLS, as in production."""
    if station is None:
        peer = make(fleet.broker, *fleet.broker.server_credentials)
    else:
        peer = make(
            fleet.broker, station.station_id, station.password, tls=True,
            ca_file=fleet.broker.ca_file,
        )  # fmt: skip
    rc = peer.connect()
    assert not rc.is_failure, f"{peer.username} refused: {rc}"
    return peer


def server_hearing_everything(make: Callable[..., Peer], fleet: Fleet) -> Peer:
    server = connect(make, fleet, None)
    server.subscribe(f"{topics.ROOT}/#")
    return server


def of(direction: Direction) -> list[topics.Topic]:
    found = [t for t in TOPICS if t.direction is direction]
    assert found, f"the protocol declares no {direction} topic"
    return found


def received(peer: Peer) -> set[tuple[str, bytes]]:
    with peer._cond:
        return set(peer.received)


def wait_for_all(peer: Peer, expected: set[tuple[str, bytes]], what: str) -> None:
    wait_until(lambda: expected <= received(peer), 10, f"{what}: {expected - received(peer)}")
    time.sleep(SETTLE_S)


def test_the_broker_under_test_runs_what_loaxa_broker_config_writes(
    fleet: Fleet, tmp_path: Path
) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        app,
        ["broker", "config", "--out", str(out), "--database-url", fleet.database_url,
         "--user", getpass.getuser()],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "acl").read_text() == (fleet.broker.workdir / "acl").read_text()

    def station_lines(path: Path) -> list[str]:
        """The stations' accounts: the server's and the ingest workers' are made anew."""
        lines = path.read_text().splitlines()
        return [line for line in lines if not line.startswith(("loaxa-server:", "loaxa-ingest:"))]

    assert station_lines(out / "passwd") == station_lines(fleet.broker.workdir / "passwd")
    assert len(station_lines(out / "passwd")) == len(PLACES)


def test_every_topic_the_server_publishes_reaches_its_own_station_or_area_only(
    fleet: Fleet, peers: Callable[..., Peer]
) -> None:
    server = connect(peers, fleet, None)
    down, area = of(Direction.DOWN), of(Direction.AREA)
    listening = {}
    for station in fleet.stations:
        peer = connect(peers, fleet, station)
        # Everything a curious station could ask for: every station's and every area's
        # down topics by name, and the whole tree by wildcard.
        peer.subscribe(
            *(t.of(s.station_id) for t in down for s in fleet.stations),
            *(t.of(code) for t in area for code in fleet.area_codes),
        )
        peer.subscribe(f"{topics.ROOT}/#")
        listening[station.station_id] = peer

    def payload(topic: str) -> bytes:
        return f"from the server to {topic}".encode()

    published = [t.of(s.station_id) for t in down for s in fleet.stations]
    published += [t.of(code) for t in area for code in fleet.area_codes]
    for topic in published:
        server.publish(topic, payload(topic))
    control = {s.station_id: down[0].of(s.station_id) for s in fleet.stations}
    for topic in control.values():  # after everything else, on each station's own topic
        server.publish(topic, b"control")

    for station in fleet.stations:
        own = {t.of(station.station_id) for t in down}
        own |= {t.of(code) for t in area for code in station.areas}
        expected = {(topic, payload(topic)) for topic in own}
        expected.add((control[station.station_id], b"control"))
        peer = listening[station.station_id]
        wait_for_all(peer, expected, f"{station.station_id}'s own down and area topics")
        assert received(peer) == expected, (
            f"{station.station_id} (areas {station.areas}) received what is not its own: "
            f"{sorted(received(peer) - expected)}"
        )


def test_every_topic_a_station_publishes_is_accepted_from_its_owner_only(
    fleet: Fleet, peers: Callable[..., Peer]
) -> None:
    server = server_hearing_everything(peers, fleet)
    up, own_down = of(Direction.UP), of(Direction.DOWN)[0]
    stations = {s.station_id: connect(peers, fleet, s) for s in fleet.stations}
    for sender, peer in stations.items():
        # Nobody but the server reads an up topic, not even its owner; the station's own
        # down topic carries the control that ends the wait.
        peer.subscribe(*(t.of(other) for t in up for other in stations))
        peer.subscribe(own_down.of(sender))

    def payload(sender: str, topic: str) -> bytes:
        return f"{sender} on {topic}".encode()

    for sender, peer in stations.items():
        forged = [t.of(other) for t in up for other in stations if other != sender]
        # Down and area topics are the server's alone, the sender's own included.
        forged += [t.of(s) for t in of(Direction.DOWN) for s in stations]
        forged += [t.of(code) for t in of(Direction.AREA) for code in fleet.area_codes]
        for topic in forged:
            peer.publish(topic, payload(sender, topic))
        for t in up:  # its own, last: their arrival proves the forged ones were dropped
            peer.publish(t.of(sender), payload(sender, t.of(sender)))

    expected = {(t.of(sender), payload(sender, t.of(sender))) for t in up for sender in stations}
    wait_for_all(server, expected, "every station's own up topics")
    assert received(server) == expected, sorted(received(server) - expected)

    for sender, peer in stations.items():
        server.publish(own_down.of(sender), b"control")
        wait_for_all(peer, {(own_down.of(sender), b"control")}, f"{sender}'s control")
        assert received(peer) == {(own_down.of(sender), b"control")}, (
            f"{sender} read an up topic: {sorted(received(peer))}"
        )


def test_a_last_will_is_published_only_on_the_stations_own_status_topic(
    fleet: Fleet, peers: Callable[..., Peer]
) -> None:
    """The broker publishes a will for the station; the ACL must judge it as the station's."""
    server = server_hearing_everything(peers, fleet)
    (status,) = [t for t in of(Direction.UP) if t.function == "status"]
    a, b = fleet.stations[0], fleet.stations[1]

    def die_with_will(station: Registered, will_topic: str) -> None:
        """Connect with a will on ``will_topic``, then vanish without a DISCONNECT."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"will-{uuid.uuid4().hex[:6]}")
        client.username_pw_set(station.station_id, station.password)
        client.will_set(will_topic, f"will of {station.station_id}".encode(), qos=1)
        accepted: list[bool] = []
        client.on_connect = lambda _c, _u, _f, rc, _p: accepted.append(not rc.is_failure)
        client.connect(fleet.broker.host, fleet.broker.port)
        deadline = time.monotonic() + 5
        while not accepted and time.monotonic() < deadline:
            client.loop(timeout=0.05)
        assert accepted == [True]
        sock = client.socket()
        assert sock is not None
        sock.close()  # a power cut: the broker publishes the will

    die_with_will(a, status.of(b.station_id))  # a will forged for another station
    time.sleep(SETTLE_S)
    die_with_will(a, status.of(a.station_id))  # its own, after: the control
    expected = {(status.of(a.station_id), f"will of {a.station_id}".encode())}
    wait_for_all(server, expected, "A's own last will")
    assert received(server) == expected, sorted(received(server))
