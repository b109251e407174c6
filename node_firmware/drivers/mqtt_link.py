"""The station's MQTT link (paho-mqtt 2): turns broker callbacks into core inputs.

Availability follows the device convention: a retained ``offline`` last will, a
retained ``online`` on every connect and ``stopped`` on a clean stop.

The link owns its reconnect loop (one thread running paho's ``loop()``), rather than
paho's ``loop_start``: paho's wait between attempts cannot be cut short, and a station
whose own network comes back must not sit out a wait drawn while it was cut off. Waits
follow :class:`~node_firmware.core.backoff.ReconnectBackoff` (exponential, full jitter:
a broker restart is not answered by thousands of stations in the same second), and
:meth:`MqttLink.network_returned` (called by the network watcher) cuts the current wait
to a few seconds of jitter. Every attempt is bounded: the TCP connect and TLS handshake
by paho's ``connect_timeout``, the wait for the broker's CONNACK by the keepalive; the
loop survives any error, so no state is one the station never leaves. With several
broker addresses (``mqtt.fallbacks``) each ended attempt moves to the next one
(:class:`~node_firmware.core.brokers.BrokerRotation`). A subscription the broker
refuses (a NATS cluster node does while JetStream elects leaders) is asked for again
every few seconds, and once granted the link says ``online`` again so the server re-sends
the alerts the station may have missed meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from loaxa_protocol import Status, StatusState, topics
from node_firmware.config import MqttConfig
from node_firmware.core.backoff import ReconnectBackoff
from node_firmware.core.brokers import BrokerRotation
from node_firmware.core.events import (
    AlertReceived,
    BrokerConnected,
    BrokerDisconnected,
    CommandReceived,
    Input,
    LiveReceived,
    PlanReceived,
    TrustReceived,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
"""TCP connect plus TLS handshake: a slow 4G uplink needs seconds, a dead one never ends."""
RESUBSCRIBE_S = 2.0
"""How soon a subscription the broker refused is asked for again."""


class MqttLink:
    """One station's broker connection; ``deliver`` is called on paho's network thread.

    Besides its own topics the station listens for alerts on its own alert topic and
    on the alert topic of every area it lies in (``areas``: commune, district,
    province), so the province reaches a whole area with one publish.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        station_id: str,
        deliver: Callable[[Input], None],
        areas: Sequence[str] = (),
        backoff: ReconnectBackoff | None = None,
        on_acked: Callable[[int], None] | None = None,
    ) -> None:
        self._station_id = station_id
        self._deliver = deliver
        self._live_topic = topics.live(station_id)
        self._alert_topics = [topics.alert(station_id), *(topics.area_alert(a) for a in areas)]
        self._alert_topic_set = frozenset(self._alert_topics)
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"loaxa-node-{station_id}",
            clean_session=True,
            reconnect_on_failure=False,  # our loop reconnects (see the module docstring)
        )
        self._client.connect_timeout = CONNECT_TIMEOUT_S
        if cfg.username:
            self._client.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            self._client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None, cert_reqs=ssl.CERT_REQUIRED
            )
        self._client.will_set(
            topics.status(station_id), self._status(StatusState.OFFLINE), qos=1, retain=True
        )
        self._backoff = backoff or ReconnectBackoff()
        self._backoff_lock = threading.Lock()
        self._random = random.Random()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._subscribing = threading.Lock()
        self._requested: dict[int, tuple[list[str], bool]] = {}
        if on_acked is not None:
            # paho calls this with its own lock held: the callee may only note the id.
            self._client.on_publish = lambda _c, _u, mid, _r, _p: on_acked(mid)
        self._cfg = cfg
        self._stopping = threading.Event()
        self._network_back = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{station_id}", daemon=True)
        self._peer: tuple[str, int] | None = None
        self._rotation = BrokerRotation(
            ((cfg.host, cfg.port), *((b.host, b.port) for b in cfg.fallbacks))
        )
        self._was_connected = False

    def _status(self, state: StatusState) -> bytes:
        at = None if state is StatusState.OFFLINE else datetime.now(UTC)
        status = Status(station_id=self._station_id, state=state, at=at)
        return status.model_dump_json(exclude_none=True).encode()

    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried, never fatal."""
        # paho wakes its network thread on a publish from another thread only if it
        # knows that thread (as after loop_start); it keeps no public setter for it.
        self._client._thread = self._thread
        self._thread.start()

    def stop(self) -> None:
        if self._client.is_connected():
            info = self._client.publish(
                topics.status(self._station_id), self._status(StatusState.STOPPED), 1, True
            )
            with contextlib.suppress(RuntimeError):
                info.wait_for_publish(timeout=2)
        self._stopping.set()
        self._network_back.set()  # ends a wait between attempts at once
        self._client.disconnect()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(CONNECT_TIMEOUT_S + 5)

    def network_returned(self, reason: str) -> None:
        """The station's network came back: cut the current wait to a few seconds.

        Ignored while connected (a new address next to a working one changes nothing).
        """
        if not self._client.is_connected():
            log.info("network back (%s): next broker attempt within seconds", reason)
            self._network_back.set()

    @property
    def broker_address(self) -> tuple[str, int] | None:
        """The broker's address as last connected (for the network watcher's route check)."""
        return self._peer

    # ------------------------------------------------------------ the reconnect loop

    def _run(self) -> None:
        wait_s = 0.0  # the first attempt at once
        while not self._stopping.is_set():
            self._wait(wait_s)
            if self._stopping.is_set():
                break
            try:
                self._session()
            except Exception:  # a bug here must not leave the station off the air for good
                log.exception("broker session failed unexpectedly")
            if self._stopping.is_set():
                break
            with self._backoff_lock:
                if self._was_connected:
                    self._backoff = self._backoff.disconnected(time.monotonic())
                wait_s, self._backoff = self._backoff.next_wait(self._random.random())
            self._was_connected = False
            log.info("next broker connection attempt in %.1f s", wait_s)

    def _wait(self, wait_s: float) -> None:
        """Sleep ``wait_s``, cut short to a few seconds' jitter if the network returns."""
        deadline = time.monotonic() + wait_s
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._network_back.wait(remaining):
                self._network_back.clear()
                if self._stopping.is_set():
                    return
                with self._backoff_lock:
                    quick_s, self._backoff = self._backoff.network_returned(self._random.random())
                if time.monotonic() + quick_s < deadline:
                    deadline = time.monotonic() + quick_s
                    log.info("next broker connection attempt in %.1f s", quick_s)

    def _session(self) -> None:
        """One attempt and, if it succeeds, the connection's whole life."""
        self._network_back.clear()  # a return noticed before this attempt is spent
        host, port = self._rotation.current
        self._rotation = self._rotation.attempt_ended()  # whatever happens, the next's turn
        try:
            self._client.connect(host, port, keepalive=self._cfg.keepalive_s)
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, TLS, DNS
            log.info("broker connection attempt to %s:%s failed: %s", host, port, exc)
            return
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stopping.is_set():
            # paho closes a connection whose CONNACK or PINGRESP is a keepalive late.
            rc = self._client.loop(timeout=1.0)
        if self._stopping.is_set():
            # Let paho send the DISCONNECT that stop() queued.
            for _ in range(10):
                if self._client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break

    @property
    def sends_at_once(self) -> bool:
        """Whether the live connection has Nagle's algorithm off (see ``_no_delay``)."""
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):
            return False
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @property
    def running(self) -> bool:
        """Whether the link's network thread (which connects, reconnects and reads) is alive."""
        return self._thread.is_alive()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Hand a message to paho; its message id (``on_acked`` gets it at the PUBACK).

        paho keeps a QoS 1 message it could not send, and every one awaiting its PUBACK,
        and sends them again after a reconnect.
        """
        return self._client.publish(topic, payload, qos=qos, retain=retain).mid

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("broker refused connection: %s", reason)
            return
        with self._backoff_lock:
            self._backoff = self._backoff.connected(time.monotonic())
        self._was_connected = True
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                self._peer = sock.getpeername()[:2]
        _no_delay(client)
        with self._subscribing:
            self._requested.clear()  # SUBACKs of a dead connection never come
        # trust first: after a key rotation the update must precede plans signed anew
        self._subscribe(
            client,
            [
                topics.trust(self._station_id),
                *self._alert_topics,
                topics.plan(self._station_id),
                topics.command(self._station_id),
                topics.live(self._station_id),
            ],
        )
        client.publish(topics.status(self._station_id), self._status(StatusState.ONLINE), 1, True)
        self._deliver(BrokerConnected())

    def _subscribe(self, client: mqtt.Client, wanted: list[str], retry: bool = False) -> None:
        with self._subscribing:
            _rc, mid = client.subscribe([(topic, 1) for topic in wanted])
            if mid is not None:
                self._requested[mid] = (wanted, retry)

    def _on_subscribe(
        self, client: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode], _p: object
    ) -> None:
        """Ask again for what the broker refused, until it grants it.

        Mosquitto grants a station's own topics at once; a NATS cluster node answers
        0x80 while JetStream elects new leaders after a node died, and the station would
        otherwise stay deaf to that topic (its plan, an area's alerts) until it reconnects.
        """
        with self._subscribing:
            wanted, retry = self._requested.pop(mid, ([], False))
        refused = [topic for topic, code in zip(wanted, codes, strict=False) if code.is_failure]
        if self._stopping.is_set():
            return
        if refused:
            log.warning("broker refused %s; asking again in %.0f s", refused, RESUBSCRIBE_S)
            timer = threading.Timer(RESUBSCRIBE_S, self._subscribe, (client, refused, True))
            timer.daemon = True
            timer.start()
        elif retry:
            # Say "online" again: the server re-sends the alerts this station has not
            # confirmed, which it may have missed while it could not hear them.
            log.info("broker granted the subscriptions it had refused")
            client.publish(
                topics.status(self._station_id), self._status(StatusState.ONLINE), 1, True
            )

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        log.info("broker connection lost: %s", reason)
        self._deliver(BrokerDisconnected())

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if message.topic in self._alert_topic_set:  # first: every millisecond counts here
            self._deliver(AlertReceived(bytes(message.payload)))
        elif message.topic == self._live_topic:
            self._deliver(LiveReceived(bytes(message.payload)))
        elif message.topic == topics.plan(self._station_id):
            self._deliver(PlanReceived(bytes(message.payload)))
        elif message.topic == topics.trust(self._station_id):
            self._deliver(TrustReceived(bytes(message.payload)))
        elif message.topic == topics.command(self._station_id):
            self._deliver(CommandReceived(bytes(message.payload)))
        else:
            log.warning("message on unexpected topic %s ignored", message.topic)


def _no_delay(client: mqtt.Client) -> None:
    """Send each packet at once: an ack held back by Nagle's algorithm waits for the
    broker's delayed ACK (40 ms on Linux), a tenth of the alert latency budget."""
    sock = client.socket()
    if isinstance(sock, socket.socket):  # an ssl.SSLSocket is one too
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
