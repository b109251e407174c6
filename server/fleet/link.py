"""The server's MQTT connection (paho-mqtt 2): the only module that imports paho.

Two threads: the network thread runs paho's loop and reconnects with exponential
back-off and jitter (after a broker restart the server must not hammer it in step
with thousands of stations); the worker thread receives messages through a queue and
hands them, in batches, to the ingest, so database writes never stall keepalives.
Jobs such as "republish every plan after a reconnect" run on the worker too.

That queue is a :class:`~server.fleet.backlog.Backlog` of ``fleet_queue_max`` messages:
when the database falls behind, the oldest health reports are shed (counted), and
events, status, replies and down-topic copies spill to ``data_dir/spool`` instead of
ever being dropped; paho's thread never waits, so alerts still leave at once.

A fixed client id with a persistent session (clean_session=False) lets the broker
hold station events (QoS 1) while the server is down and deliver them on return.

With an :class:`~server.fleet.watch.IntrusionWatch` the link also subscribes to every
down-topic and records each payload it publishes *before* handing it to paho, so the
echo of the server's own message can never arrive unrecognised.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import random
import re
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from loaxa_protocol import topics
from server.fleet.backlog import Backlog, SpillFile
from server.fleet.burst import BurstReadClient
from server.fleet.watch import DOWN_SUBSCRIPTIONS, IntrusionWatch, parse_down_topic, watched
from server.settings import Settings

log = logging.getLogger(__name__)

SUBSCRIPTIONS = (topics.ALL_EVENTS, topics.ALL_STATUS, topics.ALL_HEALTH, topics.ALL_REPLIES)
WORKER_TOPICS = (topics.ALL_EVENTS, topics.ALL_HEALTH)
"""What ``loaxa worker ingest`` processes take over when ``ingest_workers`` is on."""
MAX_BATCH = 500
MIN_BACKOFF_S = 0.25
SHEDDABLE = frozenset({"health"})
"""Only heartbeats may be dropped: the next one, seconds later, says the same and more."""

Message = tuple[str, bytes]
Job = Callable[[], object]
_STOP = object()


class FleetLink:
    """Connects to the broker, feeds station messages to ``on_messages``, publishes plans.

    ``on_messages`` receives batches of (topic, payload) on the worker thread;
    ``on_connected`` is queued as a job on every (re)connect once the broker has
    acknowledged the subscriptions (only then is the link ``connected``); with a ``watch``,
    down-topic messages (the server's own echoes included) reach ``on_messages`` too.
    """

    def __init__(
        self,
        settings: Settings,
        on_messages: Callable[[Sequence[Message]], None],
        on_connected: Job | None = None,
        watch: IntrusionWatch | None = None,
    ) -> None:
        self._host = settings.mqtt_host
        self._port = settings.mqtt_port
        self._keepalive = settings.mqtt_keepalive_s
        self._on_messages = on_messages
        self._on_connected = on_connected
        self._watch = watch
        own = tuple(
            t for t in SUBSCRIPTIONS if not (settings.ingest_workers and t in WORKER_TOPICS)
        )
        self._subscriptions = own + (DOWN_SUBSCRIPTIONS if watch is not None else ())
        self.broker_dropped: int | None = None
        """the broker's own drop counter (None: this broker does not publish it to us). A
        server too slow to read loses reports at the broker, where no queue of ours counts."""
        self._max_backoff = settings.mqtt_reconnect_max_s
        self._min_backoff = min(MIN_BACKOFF_S, self._max_backoff)
        spill_name = re.sub(r"[^A-Za-z0-9_.-]", "_", settings.mqtt_client_id)
        spill = SpillFile(
            settings.data_dir / "spool" / f"ingest-{spill_name}.spill",
            encode_message,
            decode_message,
        )
        self._queue: Backlog[Any] = Backlog(
            settings.fleet_queue_max, kind_of, SHEDDABLE, spill, "fleet ingest queue"
        )
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._had_session = False
        self._threads: list[threading.Thread] = []
        self._last_sent: mqtt.MQTTMessageInfo | None = None
        self._subscribing: int | None = None
        """the message id of the connect's SUBSCRIBE, acknowledged before we are connected"""

        client = BurstReadClient(
            CallbackAPIVersion.VERSION2,
            client_id=settings.mqtt_client_id,
            clean_session=False,
            reconnect_on_failure=False,  # we reconnect ourselves, with jitter
        )
        if settings.mqtt_username:
            password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            client.username_pw_set(settings.mqtt_username, password)
        if settings.mqtt_tls:
            client.tls_set(ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None)
        client.on_connect = self._handle_connect
        client.on_subscribe = self._handle_subscribe
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        self._client = client

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the network and worker threads; connection happens in the background."""
        if self._threads:
            raise RuntimeError("FleetLink already started")
        for name, target in (("fleet-net", self._network_loop), ("fleet-work", self._work)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            if target == self._network_loop:
                # paho writes a publish from the caller's thread unless it knows the thread
                # that runs its loop: two threads on one TLS socket abort the process.
                # Known, a publish is queued and the loop woken (its socket pair).
                self._client._thread = thread
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect cleanly, then let the worker finish what it already received."""
        self._stopping.set()
        self._client.disconnect()
        self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout_s)
        if not any(thread.is_alive() for thread in self._threads):
            self._queue.close()  # what is still spilled is read back at the next start
        self._threads.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def backlog(self) -> int:
        """Messages received but not yet ingested (in memory and spilled)."""
        return self._queue.qsize()

    def queue_stats(self) -> dict[str, Any]:
        """The ingest queue's counters for ``/api/v1/system``."""
        return self._queue.as_dict()

    # ------------------------------------------------------------- publish

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message; paho sends it from its own buffer (even after a reconnect)."""
        if self._watch is not None and watched(topic, payload):
            # Not live frames (many a second): they would crowd out the plans whose
            # echoes the watch is owed.
            self._watch.published(topic, payload, retain=retain)
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("publish to %s failed: %s", topic, mqtt.error_string(info.rc))
        elif qos > 0:
            self._last_sent = info

    def flush(self, timeout_s: float) -> None:
        """Wait until the broker acknowledged the last QoS 1 message, at most ``timeout_s``.

        paho writes from its network thread, which needs the interpreter lock: a caller
        that goes on computing right after a publish keeps it waiting up to the switch
        interval (5 ms) for every packet. Waiting here hands the lock over at once.
        Messages are acknowledged in order, so the last one stands for them all.
        """
        info = self._last_sent
        if info is None or not self._connected.is_set():
            return  # not connected: paho keeps the messages and sends them on reconnect
        with contextlib.suppress(ValueError, RuntimeError):
            info.wait_for_publish(timeout_s)

    # ------------------------------------------------------------- paho callbacks

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%s refused connection: %s", self._host, self._port, reason_code)
            return
        # Alerts must leave at once, not wait behind an unacknowledged publish (Nagle).
        sock = client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Subscribing before on_connected republishes matters to the watch: the broker
        # sends the retained copies first, so a pre-restart plan is judged before ours.
        _rc, self._subscribing = client.subscribe([(topic, 1) for topic in self._subscriptions])
        # Apart, so a broker that refuses it (not Mosquitto, or an ACL without the line
        # ``loaxa broker config`` writes) refuses nothing else.
        client.subscribe(topics.BROKER_DROPPED, qos=0)
        self._had_session = True
        log.info("connected to broker %s:%s", self._host, self._port)

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Any,
    ) -> None:
        # Connected means listening: until the broker has the subscriptions, a station's
        # event (a fresh client id has no stored session yet) would pass us by.
        if mid != self._subscribing:
            return
        self._connected.set()
        if self._on_connected is not None:
            self._queue.put(self._on_connected)

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("lost broker connection: %s", reason_code)

    def _handle_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == topics.BROKER_DROPPED:
            self._note_broker_dropped(msg.payload)
            return
        if not watched(msg.topic, msg.payload):
            return  # the echo of one of our live frames: nothing to ingest or judge
        self._queue.put((msg.topic, msg.payload))

    def _note_broker_dropped(self, payload: bytes | bytearray) -> None:
        try:
            dropped = int(payload)
        except ValueError:
            return
        if self.broker_dropped is not None and dropped > self.broker_dropped:
            log.warning(
                "the broker dropped %s messages in its last interval (%s since it started): "
                "a client, maybe this server, reads slower than messages arrive; with "
                "thousands of health reports a second, run ingest workers",
                dropped - self.broker_dropped,
                dropped,
            )
        self.broker_dropped = dropped

    # ------------------------------------------------------------- threads

    def _network_loop(self) -> None:
        delay = self._min_backoff
        while not self._stopping.is_set():
            try:
                self._client.connect(self._host, self._port, self._keepalive)
            except (OSError, ValueError) as exc:
                log.warning("cannot reach broker %s:%s: %s", self._host, self._port, exc)
            else:
                while not self._stopping.is_set():
                    if self._client.loop(timeout=0.5) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                if self._stopping.is_set():  # send the DISCONNECT stop() queued
                    with contextlib.suppress(Exception):
                        self._client.loop_write()
                if self._had_session:
                    delay = self._min_backoff
                    self._had_session = False
                self._connected.clear()
            if self._stopping.is_set():
                break
            # Equal jitter: at least half the back-off, so retries stay spaced out.
            self._stopping.wait(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self._max_backoff)

    def _work(self) -> None:
        batch: list[Message] = []
        while True:
            item = self._queue.get()
            while True:
                if isinstance(item, tuple):
                    batch.append(item)
                    if len(batch) < MAX_BATCH:
                        try:
                            item = self._queue.get_nowait()
                            continue
                        except queue.Empty:
                            pass
                    self._flush(batch)
                    break
                self._flush(batch)
                if item is _STOP:
                    return
                self._run_job(item)
                break

    def _flush(self, batch: list[Message]) -> None:
        if not batch:
            return
        try:
            self._on_messages(list(batch))
        except Exception:  # the worker must outlive any handler bug
            log.exception("ingest of %s messages failed", len(batch))
        batch.clear()

    @staticmethod
    def _run_job(job: Job) -> None:
        try:
            job()
        except Exception:  # a failed republish must not kill the worker
            log.exception("fleet job %s failed", getattr(job, "__name__", job))


def kind_of(item: object) -> str | None:
    """The queue kind of a received message (its topic leaf, or ``down``); None for a job."""
    if not isinstance(item, tuple):
        return None
    topic = item[0]
    if parse_down_topic(topic) is not None:
        return "down"
    return topics.leaf_of(topic) if topics.station_of(topic) is not None else "other"


def encode_message(message: Message) -> bytes:
    """A spilled message: topic length, topic, payload."""
    topic = message[0].encode()
    return len(topic).to_bytes(2, "big") + topic + message[1]


def decode_message(body: bytes) -> Message:
    length = int.from_bytes(body[:2], "big")
    return body[2 : 2 + length].decode(), body[2 + length :]
