"""Real brokers and a raw MQTT probe for integration tests.

We test paho against a real Mosquitto, never a ``MagicMock(paho)``: the things that
break in the field (retained copies, last wills, reconnects after a broker restart)
only exist in a real broker. Tests with stations run :class:`ProductionMosquitto`, the
configuration ``loaxa broker config`` generates (accounts, ACL, TLS); the plain
:class:`MosquittoBroker` is open to anyone, for tests of MQTT behaviour alone.
``MqttProbe`` is a plain paho-mqtt 2 client that records everything it receives, so a
test can say "wait until the station published X".
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from loaxa.broker import (
    BrokerError,
    MosquittoBroker,
    ProductionMosquitto,
    find_mosquitto,
    free_port,
    mqtt_ping,
)
from loaxa.broker_config import StationAccount
from loaxa.nats_config import NatsNode, NatsUser, nats_conf_text
from node_firmware.config import MqttConfig
from server.passwords import hash_password, new_password

B = TypeVar("B", bound=MosquittoBroker)

__all__ = [
    "BrokerAddress",
    "MosquittoBroker",
    "MqttProbe",
    "NatsCluster",
    "ProductionMosquitto",
    "Received",
    "admit_station",
    "mosquitto_binary",
    "running_mosquitto",
    "running_nats_cluster",
    "running_production_mosquitto",
]


class BrokerAddress(Protocol):
    """Anything with a host and a port: the fixture's broker, an EmbeddedBroker…"""

    host: str

    @property
    def port(self) -> int: ...


def mosquitto_binary() -> str:
    """The mosquitto binary, or a test *failure* (not a skip) saying how to get it.

    Skipping would let a machine without mosquitto report green while every
    broker-level test was silently not run.
    """
    binary = find_mosquitto()
    if binary is None:
        pytest.fail(
            "mosquitto is not installed, and Loaxa's integration tests need a real broker. "
            "Install it with 'apt-get install mosquitto' (./.ci/run does this), "
            "or put a mosquitto binary on PATH.",
            pytrace=False,
        )
    return binary


@contextlib.contextmanager
def running_mosquitto(workdir: Path, persistence: bool = False) -> Iterator[MosquittoBroker]:
    """A started mosquitto in ``workdir``, killed on exit whatever the test did to it."""
    broker = MosquittoBroker(workdir=workdir, binary=mosquitto_binary(), persistence=persistence)
    with _running(broker) as started:
        yield started


@contextlib.contextmanager
def running_production_mosquitto(workdir: Path) -> Iterator[ProductionMosquitto]:
    """A started mosquitto running the generated production config, killed on exit."""
    with _running(ProductionMosquitto(workdir=workdir, binary=mosquitto_binary())) as started:
        yield started


@contextlib.contextmanager
def _running(broker: B) -> Iterator[B]:
    try:
        broker.start()
    except BrokerError as exc:
        pytest.fail(f"could not start mosquitto: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop(hard=True)


def admit_station(
    broker: ProductionMosquitto, station_id: str, area_codes: Sequence[str] = ()
) -> MqttConfig:
    """Give a station without a server an account, as registration and ``loaxa broker
    config`` would, and return the node's MQTT settings for it (TLS, its own account).

    ``area_codes`` are the station's area and its ancestors (commune, province), whose
    alert topics the ACL lets it read.
    """
    password = new_password()
    account = StationAccount(station_id, station_id, hash_password(password), tuple(area_codes))
    broker.load([*(a for a in broker.accounts if a.station_id != station_id), account])
    return MqttConfig(
        host=broker.host,
        port=broker.tls_port,
        username=station_id,
        password=password,
        tls=True,
        ca_file=broker.ca_file,
    )


@dataclass(frozen=True)
class Received:
    """One message as the probe saw it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    at_monotonic: float

    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class MqttProbe:
    """A raw paho-mqtt 2 client that subscribes to ``topics`` and records every message.

    It re-subscribes on every (re)connect, so it keeps working across a broker
    restart. Thread-safe: paho's network thread appends, the test thread waits.

    Use it as a context manager, or call :meth:`start` and :meth:`close`::

        with MqttProbe(broker, "loaxa/v1/station/+/event") as probe:
            ...
            msg = probe.wait_for(lambda m: m.json()["kind"] == "played")
    """

    broker: BrokerAddress
    topics: str | list[str] = "#"
    qos: int = 1
    client_id: str = field(default_factory=lambda: f"probe-{uuid.uuid4().hex[:8]}")
    clean_session: bool = True
    username: str | None = None
    """Default: on a :class:`ProductionMosquitto`, the server's account (it may read and
    write every Loaxa topic); elsewhere anonymous."""
    password: str | None = None
    _messages: list[Received] = field(default_factory=list, init=False, repr=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False, repr=False)
    _client: mqtt.Client | None = field(default=None, init=False, repr=False)
    _subscribe_mid: int | None = field(default=None, init=False, repr=False)
    _ready: bool = field(default=False, init=False, repr=False)
    """Connected *and* the subscription of the current connection acknowledged."""
    _connects: int = field(default=0, init=False, repr=False)

    @property
    def filters(self) -> list[str]:
        return [self.topics] if isinstance(self.topics, str) else list(self.topics)

    @property
    def client(self) -> mqtt.Client:
        """The underlying paho client, for tests that need something unusual."""
        if self._client is None:
            raise RuntimeError("probe not started")
        return self._client

    def start(self, timeout: float = 5.0) -> Self:
        """Connect, subscribe, and return once the broker has acknowledged the subscription.

        Retained messages for the filters are therefore already on their way when this
        returns.
        """
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=self.clean_session,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        # Tests restart brokers: come back within 0.1-1 s rather than paho's 1-120 s
        # (paho accepts float delays although it annotates them as int).
        client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # type: ignore[arg-type]
        if self.username is None and isinstance(self.broker, ProductionMosquitto):
            self.username, self.password = self.broker.server_credentials
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        self._client = client
        client.connect(self.broker.host, self.broker.port, keepalive=30)
        client.loop_start()
        try:
            self.wait_connected(timeout)
        except AssertionError:
            self.close()
            raise
        return self

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # paho callbacks (network thread) ------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            return
        # Callbacks all run on paho's network thread; the lock is for wait_connected().
        with self._cond:
            self._ready = False
            self._connects += 1
            _result, self._subscribe_mid = client.subscribe([(f, self.qos) for f in self.filters])

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        with self._cond:
            self._ready = False
            self._cond.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        with self._cond:
            if mid == self._subscribe_mid and not any(code.is_failure for code in codes):
                self._ready = True
                self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        received = Received(
            msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), time.monotonic()
        )
        with self._cond:
            self._messages.append(received)
            self._cond.notify_all()

    # test-side API ------------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        """A snapshot of everything received so far (since the last :meth:`clear`)."""
        with self._cond:
            return list(self._messages)

    def on(self, topic: str) -> list[Received]:
        """Messages received on exactly ``topic``."""
        return [m for m in self.messages if m.topic == topic]

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def wait_for(
        self, predicate: Callable[[Received], bool] | None = None, timeout: float = 5.0
    ) -> Received:
        """The first message (already received or arriving) that satisfies ``predicate``.

        Raises AssertionError listing what *was* received, which is what one needs to
        see when an integration test fails.
        """
        return self.wait_for_count(1, predicate, timeout)[0]

    def wait_for_count(
        self,
        count: int,
        predicate: Callable[[Received], bool] | None = None,
        timeout: float = 5.0,
    ) -> list[Received]:
        """The first ``count`` matching messages, waiting up to ``timeout`` seconds."""
        match = predicate or (lambda _m: True)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for m in self._messages if _safe(match, m)]
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = "\n  ".join(
                        f"{m.topic} retain={m.retain} qos={m.qos} {m.payload[:200]!r}"
                        for m in self._messages[-20:]
                    )
                    raise AssertionError(
                        f"probe {self.client_id} on {self.filters}: wanted {count} matching "
                        f"message(s), got {len(found)} within {timeout} s; last received:\n  "
                        f"{seen or '(nothing)'}"
                    )
                self._cond.wait(remaining)

    @property
    def connect_count(self) -> int:
        """How many times the probe has connected; read it before restarting a broker."""
        with self._cond:
            return self._connects

    def wait_connected(self, timeout: float = 10.0, after: int = 0) -> None:
        """Block until connected and subscribed, on a connection newer than ``after``.

        After a broker restart pass the :attr:`connect_count` read before the restart,
        otherwise this may return before the probe has even noticed the outage::

            n = probe.connect_count
            mosquitto.stop(); mosquitto.start()
            probe.wait_connected(after=n)
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready and self._connects > after, timeout):
                raise AssertionError(
                    f"probe {self.client_id} not connected and subscribed to {self.filters} "
                    f"on {self.broker.host}:{self.broker.port} within {timeout} s"
                )

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 1,
        retain: bool = False,
        timeout: float = 5.0,
    ) -> None:
        """Publish and, for QoS > 0, wait until the broker has acknowledged it."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"publish to {topic} not acknowledged within {timeout} s")


def _safe(predicate: Callable[[Received], bool], message: Received) -> bool:
    """A predicate that raises (e.g. json() on a non-JSON payload) just does not match."""
    try:
        return bool(predicate(message))
    except Exception:
        return False


@dataclass
class NatsCluster:
    """A cluster of real ``nats-server`` processes with JetStream and MQTT listeners.

    Each node runs the configuration :func:`loaxa.nats_config.nats_conf_text` writes:
    the server's account may use the whole Loaxa tree, each station only its own topics
    (the Mosquitto ACL's rules as NATS permissions). :meth:`load` replaces the station
    accounts and reloads every running node (SIGHUP), as ``admit_station`` does.
    """

    workdir: Path
    size: int = 3
    binary: str = shutil.which("nats-server") or "/usr/sbin/nats-server"
    server_credentials: tuple[str, str] = field(default=("", ""), init=False, repr=False)
    nodes: list[NatsNode] = field(default_factory=list, init=False)
    users: list[NatsUser] = field(default_factory=list, init=False)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.server_credentials = ("loaxa-server", new_password())
        self.nodes = [
            NatsNode(f"n{i}", free_port(), free_port(), free_port(), str(self.workdir / f"n{i}"))
            for i in range(1, self.size + 1)
        ]

    def address(self, index: int) -> tuple[str, int]:
        """Where stations dial node ``index`` (0-based): its MQTT listener."""
        return self.nodes[index].host, self.nodes[index].mqtt_port

    def _write(self, node: NatsNode) -> Path:
        server = NatsUser(*self.server_credentials)
        path = self.workdir / f"{node.name}.conf"
        path.write_text(nats_conf_text(node, self.nodes, [server, *self.users]))
        return path

    def log_text(self, index: int) -> str:
        path = self.workdir / f"{self.nodes[index].name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_node(self, index: int) -> None:
        node = self.nodes[index]
        conf = self._write(node)
        with (self.workdir / f"{node.name}.log").open("ab") as log:
            self._procs[node.name] = subprocess.Popen(
                [self.binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
            )

    def start(self, timeout: float = 30.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for index in range(self.size):
            self.start_node(index)
        # MQTT answers only once JetStream has a meta leader, i.e. the cluster has formed.
        user, password = self.server_credentials
        deadline = time.monotonic() + timeout
        for index in range(self.size):
            while not mqtt_ping(*self.address(index), username=user, password=password):
                if time.monotonic() > deadline:
                    self.stop()
                    tail = self.log_text(index)[-2000:]
                    raise AssertionError(f"NATS node {index + 1} not serving MQTT:\n{tail}")
                time.sleep(0.2)
        return self

    def kill(self, index: int) -> None:
        """SIGKILL one node: it dies with its clients' sockets, as a crashed machine does."""
        proc = self._procs.pop(self.nodes[index].name, None)
        if proc is not None:
            proc.kill()
            proc.wait(10)

    def load(self, users: Sequence[NatsUser]) -> None:
        """Replace the station accounts on every node and make the running ones reload."""
        self.users = list(users)
        for node in self.nodes:
            self._write(node)
            proc = self._procs.get(node.name)
            if proc is not None:
                proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        for index in range(self.size):
            self.kill(index)


@contextlib.contextmanager
def running_nats_cluster(workdir: Path, size: int = 3) -> Iterator[NatsCluster]:
    """A started NATS cluster (MQTT on every node), killed on exit whatever happened."""
    if not Path(NatsCluster.binary).exists():
        pytest.fail(
            "nats-server is not installed: 'apt-get install nats-server' (scripts/system-deps "
            "does it)",
            pytrace=False,
        )
    cluster = NatsCluster(workdir, size)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
