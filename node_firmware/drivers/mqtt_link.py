"""The station's MQTT link (paho-mqtt 2): turns broker callbacks into core inputs.

Availability follows the device convention: a retained ``offline`` last will, a
retained ``online`` on every connect and ``stopped`` on a clean stop. Reconnection
follows :class:`~node_firmware.core.backoff.ReconnectBackoff` (exponential, full
jitter): paho's own doubling is overridden before every wait, so a broker restart is
not answered by thousands of stations in the same second, and none sleeps a minute
after the broker is back.
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
from paho.mqtt.enums import CallbackAPIVersion

from loaxa_protocol import Status, StatusState, topics
from node_firmware.config import MqttConfig
from node_firmware.core.backoff import ReconnectBackoff
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
        )
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
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        if on_acked is not None:
            # paho calls this with its own lock held: the callee may only note the id.
            self._client.on_publish = lambda _c, _u, mid, _r, _p: on_acked(mid)
        self._cfg = cfg

    def _status(self, state: StatusState) -> bytes:
        at = None if state is StatusState.OFFLINE else datetime.now(UTC)
        status = Status(station_id=self._station_id, state=state, at=at)
        return status.model_dump_json(exclude_none=True).encode()

    def start(self) -> None:
        """Connect in the background; an unreachable broker is retried, never fatal."""
        self._client.connect_async(self._cfg.host, self._cfg.port, keepalive=self._cfg.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        if self._client.is_connected():
            info = self._client.publish(
                topics.status(self._station_id), self._status(StatusState.STOPPED), 1, True
            )
            info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def sends_at_once(self) -> bool:
        """Whether the live connection has Nagle's algorithm off (see ``_no_delay``)."""
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):
            return False
        return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @property
    def running(self) -> bool:
        """Whether paho's network thread (which connects, reconnects and reads) is alive."""
        thread = self._client._thread  # paho keeps no public handle on it
        return thread is not None and thread.is_alive()

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
        _no_delay(client)
        # trust first: after a key rotation the update must precede plans signed anew
        client.subscribe(
            [
                (topics.trust(self._station_id), 1),
                *((topic, 1) for topic in self._alert_topics),
                (topics.plan(self._station_id), 1),
                (topics.command(self._station_id), 1),
                (topics.live(self._station_id), 1),
            ]
        )
        client.publish(topics.status(self._station_id), self._status(StatusState.ONLINE), 1, True)
        self._deliver(BrokerConnected())

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        log.info("broker connection lost: %s", reason)
        with self._backoff_lock:
            self._backoff = self._backoff.disconnected(time.monotonic())
        self._plan_next_wait()
        self._deliver(BrokerDisconnected())

    def _on_connect_fail(self, _c: mqtt.Client, _u: object) -> None:
        self._plan_next_wait()

    def _plan_next_wait(self) -> None:
        """Set paho's next reconnect wait to our draw (paho then waits exactly that long)."""
        with self._backoff_lock:
            wait_s, self._backoff = self._backoff.next_wait(self._random.random())
        log.info("next broker connection attempt in %.1f s", wait_s)
        # paho types the delays as int but computes with them as numbers.
        self._client.reconnect_delay_set(min_delay=wait_s, max_delay=wait_s)  # type: ignore[arg-type]

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
