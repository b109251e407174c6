"""Attacks on a real Mosquitto running the configuration ``loaxa broker config`` generates.

Every test writes the broker directory with the generator itself, starts
``mosquitto -c DIR/mosquitto.conf`` and attacks it with plain paho clients. Mosquitto
refuses a bad CONNECT outright, but an unauthorised subscribe or publish is *silently*
not delivered, so each "nothing arrives" assertion is paired with a permitted message
sent after the forbidden ones on the same connection: once the permitted one has
arrived, the forbidden ones would have too.
"""

from __future__ import annotations

import getpass
import signal
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from sqlmodel import Session
from typer.testing import CliRunner

from loaxa.broker import free_port
from loaxa.broker_config import (
    BrokerOptions,
    StationAccount,
    load_station_accounts,
    new_ca,
    parse_server_env,
    write_broker_dir,
)
from loaxa.cli import app
from loaxa_protocol import topics
from server.areas import seed_areas
from server.db import create_tables, make_engine
from server.models import Station
from server.passwords import hash_password
from tests.brokers import mosquitto_binary

PW_A, PW_B = "password-of-station-a-1", "password-of-station-b-2"
A = StationAccount("cb-st-001", "cb-st-001", hash_password(PW_A), ("01273", "04"))
B = StationAccount("cb-st-002", "cb-st-002", hash_password(PW_B), ("01279", "04"))


# ---------------------------------------------------------------- the broker


@dataclass
class GeneratedBroker:
    """Mosquitto started with ``-c`` on a generated directory, nothing else added."""

    out_dir: Path
    port: int
    tls_port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.out_dir.parent / f"{self.out_dir.name}.log"

    @property
    def server_credentials(self) -> tuple[str, str]:
        found = parse_server_env((self.out_dir / "server.env").read_text())
        assert found is not None
        return found

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 10.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.out_dir / "mosquitto.conf")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited:\n{self.log_text()[-2000:]}", pytrace=False)
            if " running" in self.log_text()[offset:] and _accepts(self.host, self.port):
                return
            time.sleep(0.05)
        pytest.fail(f"mosquitto did not start:\n{self.log_text()[-2000:]}", pytrace=False)

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads the password and ACL files."""
        assert self.proc is not None
        before = self.log_text().count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log_text().count("Reloading config") > before, 5, "reload")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def generated_broker(
    tmp_path: Path, accounts: Sequence[StationAccount]
) -> Iterator[GeneratedBroker]:
    """Generate the directory (as the current user, so a root test run can write it), run it."""
    out_dir = tmp_path / "broker"
    options = BrokerOptions(port=free_port(), tls_port=free_port(), run_as_user=getpass.getuser())
    write_broker_dir(out_dir, accounts, options)
    broker = GeneratedBroker(out_dir.resolve(), options.port, options.tls_port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        print(f"--- generated mosquitto log (tail) ---\n{broker.log_text()[-3000:]}")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[GeneratedBroker]:
    with generated_broker(tmp_path, [A, B]) as running:
        yield running


# ---------------------------------------------------------------- the clients


class Listeners(Protocol):
    """A broker with the generated config's two listeners (plain loopback and TLS)."""

    host: str
    tls_port: int

    @property
    def port(self) -> int: ...


@dataclass
class Peer:
    """A paho client with credentials that records what it receives."""

    broker: Listeners
    username: str | None
    password: str | None
    tls: bool = False
    ca_file: Path | None = None
    client_id: str = field(default_factory=lambda: f"attack-{uuid.uuid4().hex[:8]}")
    received: list[tuple[str, bytes]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _connack: ReasonCode | None = None
    _subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    _client: mqtt.Client | None = None
    disconnects: int = 0

    def connect(self, timeout: float = 5.0) -> ReasonCode:
        """The broker's CONNACK reason (success or refusal); TLS errors are raised."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        if self.tls:
            client.tls_set(ca_certs=str(self.ca_file) if self.ca_file else None)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        client.connect(self.broker.host, self.broker.tls_port if self.tls else self.broker.port)
        client.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self._connack is not None, timeout)
        assert self._connack is not None, "no CONNACK"
        return self._connack

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        assert self._client is not None
        _rc, mid = self._client.subscribe([(f, 1) for f in filters])
        assert mid is not None
        with self._cond:
            self._cond.wait_for(lambda: mid in self._subacks, 5)
            return self._subacks[mid]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)  # Mosquitto acknowledges even a publish it drops

    def wait_for(self, topic: str, timeout: float = 5.0) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: any(t == topic for t, _ in self.received), timeout)
            for t, payload in self.received:
                if t == topic:
                    return payload
        raise AssertionError(f"{self.username} got nothing on {topic}: {self.topics()}")

    def topics(self) -> set[str]:
        with self._cond:
            return {t for t, _ in self.received}

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        with self._cond:
            self._connack = rc
            self._cond.notify_all()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, _rc: ReasonCode, _p: Any) -> None:
        with self._cond:
            self.disconnects += 1

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        with self._cond:
            self._subacks[mid] = codes
            self._cond.notify_all()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.received.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()


@contextmanager
def peer_pool() -> Iterator[Callable[..., Peer]]:
    """``make(broker, username, password, **kw)`` → a Peer, closed when the pool ends."""
    with ExitStack() as stack:

        def make(broker: Listeners, username: str | None, password: str | None, **kw: Any) -> Peer:
            peer = Peer(broker, username, password, **kw)
            stack.callback(peer.close)
            return peer

        yield make


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    with peer_pool() as make:
        yield make


def connected(make: Callable[..., Peer], broker: GeneratedBroker, user: str, pw: str) -> Peer:
    peer = make(broker, user, pw)
    rc = peer.connect()
    assert not rc.is_failure, f"{user} refused: {rc}"
    return peer


def as_server(make: Callable[..., Peer], broker: GeneratedBroker) -> Peer:
    return connected(make, broker, *broker.server_credentials)


# ------------------------------------------------------------------ the tests


def test_anonymous_clients_are_refused_on_both_listeners(
    broker: GeneratedBroker, peers: Callable[..., Peer]
) -> None:
    assert peers(broker, None, None).connect().is_failure
    tls = peers(broker, None, None, tls=True, ca_file=broker.out_dir / "ca.crt")
    assert tls.connect().is_failure


def test_a_wrong_password_or_unknown_user_is_refused(
    broker: GeneratedBroker, peers: Callable[..., Peer]
) -> None:
    assert peers(broker, A.username, PW_B).connect().is_failure
    assert peers(broker, "cb-st-999", PW_A).connect().is_failure
    assert not peers(broker, A.username, PW_A).connect().is_failure


def test_a_station_reads_its_own_plan_but_nothing_of_another_stations(
    broker: GeneratedBroker, peers: Callable[..., Peer]
) -> None:
    server = as_server(peers, broker)
    server.publish(topics.plan(B.station_id), b"plan-for-b", retain=True)
    server.publish(topics.plan(A.station_id), b"plan-for-a", retain=True)

    a = connected(peers, broker, A.username, PW_A)
    # B's topic first: its retained copy, were it allowed, would arrive before A's own.
    a.subscribe(topics.plan(B.station_id), f"{topics.ROOT}/station/+/plan", "#")
    a.subscribe(topics.plan(A.station_id))
    assert a.wait_for(topics.plan(A.station_id)) == b"plan-for-a"
    server.publish(topics.plan(B.station_id), b"new-plan-for-b", retain=True)
    server.publish(topics.plan(A.station_id), b"new-plan-for-a", retain=True)
    wait_until(lambda: len(a.received) >= 2, 5, "A's second plan")
    time.sleep(0.2)
    assert a.topics() == {topics.plan(A.station_id)}, a.received


def test_a_station_reads_its_own_areas_and_not_another_province(
    broker: GeneratedBroker, peers: Callable[..., Peer]
) -> None:
    a = connected(peers, broker, A.username, PW_A)
    a.subscribe(f"{topics.ROOT}/area/+/#")
    a.subscribe(f"{topics.ROOT}/area/04/#", f"{topics.ROOT}/area/01273/#")
    server = as_server(peers, broker)
    for code in ("02", "01279", "01273", "04"):  # permitted ones last
        server.publish(f"{topics.ROOT}/area/{code}/alert", code.encode())
    wait_until(lambda: {p for _t, p in a.received} >= {b"01273", b"04"}, 5, "A's area alerts")
    time.sleep(0.2)
    assert {p for _t, p in a.received} == {b"01273", b"04"}


def test_a_station_cannot_publish_for_another_station_or_on_a_down_topic(
    broker: GeneratedBroker, peers: Callable[..., Peer]
) -> None:
    server = as_server(peers, broker)
    server.subscribe(f"{topics.ROOT}/#")
    a = connected(peers, broker, A.username, PW_A)
    forbidden = [
        topics.health(B.station_id),
        topics.event(B.station_id),
        topics.status(B.station_id),
        topics.plan(A.station_id),
        topics.command(A.station_id),
        f"{topics.ROOT}/station/{A.station_id}/trust",
        f"{topics.ROOT}/area/04/alert",
        "somewhere/else",
    ]
    for topic in forbidden:
        a.publish(topic, b"forged")
    a.publish(topics.health(A.station_id), b"genuine")  # the control, sent last
    assert server.wait_for(topics.health(A.station_id)) == b"genuine"
    time.sleep(0.2)
    assert server.topics() == {topics.health(A.station_id)}, server.received


def test_the_server_account_reads_and_writes_every_station_topic(
    broker: GeneratedBroker, peers: Callable[..., Peer]
) -> None:
    server = as_server(peers, broker)
    server.subscribe(f"{topics.ROOT}/station/+/event", f"{topics.ROOT}/station/+/status")
    b = connected(peers, broker, B.username, PW_B)
    b.subscribe(topics.plan(B.station_id), topics.command(B.station_id))
    server.publish(topics.plan(B.station_id), b"plan", retain=True)
    server.publish(topics.command(B.station_id), b"cmd")
    assert b.wait_for(topics.plan(B.station_id)) == b"plan"
    assert b.wait_for(topics.command(B.station_id)) == b"cmd"
    b.publish(topics.event(B.station_id), b"event")
    b.publish(topics.status(B.station_id), b"status", retain=True)
    assert server.wait_for(topics.event(B.station_id)) == b"event"
    assert server.wait_for(topics.status(B.station_id)) == b"status"


def test_tls_needs_the_generated_ca(broker: GeneratedBroker, peers: Callable[..., Peer]) -> None:
    trusted = peers(broker, A.username, PW_A, tls=True, ca_file=broker.out_dir / "ca.crt")
    assert not trusted.connect().is_failure
    untrusted = peers(broker, A.username, PW_A, tls=True)  # system trust store only
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusted.connect()


def test_rotating_a_password_cuts_the_old_session_and_removing_a_station_locks_it_out(
    tmp_path: Path, peers: Callable[..., Peer]
) -> None:
    with generated_broker(tmp_path, [A, B]) as broker:
        a = connected(peers, broker, A.username, PW_A)
        options = BrokerOptions(broker.port, broker.tls_port, run_as_user=getpass.getuser())
        rotated = StationAccount(A.station_id, A.username, hash_password("new-a-password-3"), ())
        write_broker_dir(broker.out_dir, [rotated, B], options)
        broker.reload()
        wait_until(lambda: a.disconnects > 0, 5, "the old session to be cut")
        assert peers(broker, A.username, PW_A).connect().is_failure
        assert not peers(broker, A.username, "new-a-password-3").connect().is_failure

        write_broker_dir(broker.out_dir, [rotated], options)  # B decommissioned
        broker.reload()
        assert peers(broker, B.username, PW_B).connect().is_failure


# -------------------------------------------------------- the CLI, re-run


def make_database(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'loaxa.db'}"
    engine = make_engine(url)
    create_tables(engine)
    with Session(engine) as session:
        seed_areas(session, ["04"])
    engine.dispose()
    return url


def register(url: str, account: StationAccount, area_code: str) -> None:
    engine = make_engine(url)
    with Session(engine) as session:
        session.add(
            Station(
                id=account.station_id,
                name=account.station_id,
                area_code=area_code,
                latitude=22.6,
                longitude=106.2,
                mqtt_username=account.username,
                mqtt_password_hash=account.password_hash,
            )
        )
        session.commit()
    engine.dispose()


def test_rerunning_the_cli_after_a_registration_admits_the_new_station_and_keeps_the_ca(
    tmp_path: Path, peers: Callable[..., Peer]
) -> None:
    url = make_database(tmp_path)
    register(url, A, "01273")
    assert load_station_accounts(url)[0].area_codes == ("01273", "04")
    out = tmp_path / "broker"
    port, tls_port = free_port(), free_port()
    argv = [
        "broker", "config", "--out", str(out), "--database-url", url,
        "--port", str(port), "--tls-port", str(tls_port), "--user", getpass.getuser(),
    ]  # fmt: skip
    first = CliRunner().invoke(app, argv)
    assert first.exit_code == 0, first.output
    ca, env = (out / "ca.crt").read_bytes(), (out / "server.env").read_bytes()
    assert (out / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (out / "server.env").stat().st_mode & 0o777 == 0o600

    broker = GeneratedBroker(out.resolve(), port, tls_port)
    broker.start()
    try:
        assert not peers(broker, A.username, PW_A).connect().is_failure
        assert peers(broker, B.username, PW_B).connect().is_failure

        register(url, B, "01279")
        second = CliRunner().invoke(app, argv)
        assert second.exit_code == 0, second.output
        assert (out / "ca.crt").read_bytes() == ca
        assert (out / "server.env").read_bytes() == env
        broker.reload()
        assert not peers(broker, B.username, PW_B).connect().is_failure
        assert not peers(broker, *broker.server_credentials).connect().is_failure
    finally:
        broker.stop()


def test_a_new_host_reissues_the_broker_certificate_never_the_ca_nor_a_foreign_one(
    tmp_path: Path,
) -> None:
    out = tmp_path / "broker"
    files = ("ca.crt", "ca.key", "broker.crt", "broker.key")

    def snapshot() -> dict[str, bytes]:
        return {name: (out / name).read_bytes() for name in files}

    write_broker_dir(out, [A], BrokerOptions(hosts=("a.example",)))
    first = snapshot()
    write_broker_dir(out, [A], BrokerOptions(hosts=("a.example",)))
    assert snapshot() == first
    write_broker_dir(out, [A], BrokerOptions(hosts=("a.example", "b.example")))
    second = snapshot()
    assert second["ca.crt"] == first["ca.crt"] and second["ca.key"] == first["ca.key"]
    assert second["broker.crt"] != first["broker.crt"]
    cert = x509.load_pem_x509_certificate(second["broker.crt"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"a.example", "b.example"} <= set(names.get_values_for_type(x509.DNSName))

    _key, foreign = new_ca(datetime.now(UTC), "Let's Encrypt stand-in")
    (out / "broker.crt").write_bytes(foreign.public_bytes(serialization.Encoding.PEM))
    write_broker_dir(out, [A], BrokerOptions(hosts=("c.example",)))
    assert x509.load_pem_x509_certificate((out / "broker.crt").read_bytes()) == foreign


def test_the_cli_refuses_a_missing_database_instead_of_creating_one(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    result = CliRunner().invoke(
        app,
        [
            "broker",
            "config",
            "--out",
            str(tmp_path / "b"),
            "--database-url",
            f"sqlite:///{missing}",
        ],
    )
    assert result.exit_code == 2
    assert not missing.exists()
