"""``loaxa worker ingest``: station health and events written by processes of their own.

Theory of operation. The server alone ingests everything in its own process, behind one
GIL shared with the API, the planner and alerts (on this 2-core machine it stores up to
~9,300 health reports a second, and less whenever the API is busy). A worker is a
separate process that only ingests, so adding workers adds cores (and machines) to
ingestion:

- **MQTT 5 shared subscriptions.** Every worker subscribes to
  ``$share/loaxa-ingest/loaxa/v1/station/+/health`` and ``.../event``; the broker hands each
  message to ONE member of the group, so N workers split the load with no coordination.
  The server, with ``ingest_workers`` on, stops subscribing to those two topics and keeps
  status, replies and the down-topic watch (they publish, and they are few).
- **Events are never lost.** They arrive at QoS 1 with paho's *manual acks*: a worker
  acknowledges an event only after the transaction holding it has committed. A worker
  that dies before then leaves the event unacknowledged in its persistent session
  (fixed client id, session expiry ``SESSION_EXPIRY_S``), and the broker delivers it
  again when the worker comes back. While the database is unreachable nothing is
  acknowledged; the batch is retried until it is written.
- **Health sheds, counted.** Heartbeats (QoS 0) go to the same writer the server uses
  (:class:`~server.health.ingest.HealthIngest`: batched executemany, COPY on PostgreSQL);
  beyond ``health_queue_max`` the oldest are dropped and counted in ``dropped_backlog``.
- **Counters in the database.** Workers may run on other machines, so each upserts its
  counters into ``IngestWorkerState`` every ``REPORT_S``; ``/api/v1/system`` sums them.

Writes from several workers are safe by construction: samples and event-log rows are
appends, station heads are last-writer-wins on the newest report, delivery states only
move forward (``server.fleet.ingest``), and SQLite serialises writers on its lock.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy import Engine, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from loaxa_protocol import topics
from server.alerts.service import AlertService
from server.audio.store import AudioStore
from server.db import make_engine, session_scope, utcnow
from server.fleet.burst import BurstReadClient
from server.fleet.bus import NullBus
from server.fleet.ingest import HEALTH_LEAF, Ingestor
from server.fleet.link import WORKER_TOPICS
from server.fleet.models import IngestWorkerState
from server.health.ingest import HealthIngest
from server.health.notify import Notifier
from server.keys import ServerKeys
from server.settings import Settings

log = logging.getLogger(__name__)

GROUP = "loaxa-ingest"
"""The shared-subscription group every ingest worker joins."""
SESSION_EXPIRY_S = 24 * 3600
"""How long the broker keeps a stopped worker's unacknowledged events for it."""
REPORT_S = 0.5
RETRY_S = 1.0
_STOP = object()


def shared(topic_filter: str) -> str:
    """The MQTT 5 shared-subscription filter of ``topic_filter`` for the ingest group."""
    return f"$share/{GROUP}/{topic_filter}"


def worker_name(index: int, host: str | None = None) -> str:
    """A client id unique per machine and index, stable across restarts (its session)."""
    return f"{GROUP}-{host or socket.gethostname()}-{index}"[:64]


@dataclass
class _Pending:
    topic: str
    payload: bytes
    mid: int
    qos: int


class IngestWorker:
    """One worker process's MQTT client, event writer and health writer (module doc)."""

    def __init__(
        self,
        settings: Settings,
        index: int = 0,
        clock: Callable[[], datetime] = utcnow,
        engine: Engine | None = None,
    ) -> None:
        self.name = worker_name(index)
        self._settings = settings
        self._clock = clock
        self._engine = engine or make_engine(settings.db_url)
        self._notifier = Notifier(settings)
        self.health = HealthIngest(self._engine, settings, clock, on_changes=self._notifier.send)
        # Only the delivery tracking of AlertService runs here: nothing is published or
        # signed (its bus goes nowhere), the keys are read for its constructor alone.
        alerts = AlertService(
            self._engine,
            settings,
            ServerKeys.load(settings),
            NullBus(),
            AudioStore(settings.audio_dir),
            clock,
        )
        self.ingestor = Ingestor(
            self._engine,
            clock,
            health=None,
            on_alert_events=alerts.on_alert_events,
        )
        self._events: queue.Queue[Any] = queue.Queue()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._threads: list[threading.Thread] = []
        self._started_at = clock()
        self.acked = 0
        self.retries = 0
        self.subscribed = threading.Event()

        client = BurstReadClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.name,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if settings.mqtt_username:
            password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
            client.username_pw_set(settings.mqtt_username, password)
        if settings.mqtt_tls:
            client.tls_set(ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None)
        client.reconnect_delay_set(1, max(1, int(settings.mqtt_reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client

    # ------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._notifier.start()
        self.health.start()
        for name, target in (
            ("ingest-events", self._write_events),
            ("ingest-report", self._report),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            self._settings.mqtt_host,
            self._settings.mqtt_port,
            self._settings.mqtt_keepalive_s,
            clean_start=False,
            properties=properties,
        )
        self._client.loop_start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking messages, write (and acknowledge) what arrived, report, disconnect."""
        self._client.unsubscribe([shared(t) for t in WORKER_TOPICS])
        self._stopping.set()
        self._events.put(_STOP)
        for thread in self._threads:
            thread.join(timeout_s)
        self.health.stop(timeout_s)
        self._write_state()
        self._client.disconnect()
        self._client.loop_stop()
        self._notifier.stop()
        self._engine.dispose()

    def wait_subscribed(self, timeout_s: float) -> bool:
        return self.subscribed.wait(timeout_s)

    # ------------------------------------------------------------- paho callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused ingest worker %s: %s", self.name, reason_code)
            return
        self._connected.set()
        client.subscribe([(shared(t), SubscribeOptions(qos=1)) for t in WORKER_TOPICS])
        log.info(
            "ingest worker %s connected (session present: %s)", self.name, flags.session_present
        )

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        refused = [code for code in codes if code.is_failure]
        if refused:
            log.error("broker refused the ingest subscriptions: %s", refused)
            return
        self.subscribed.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            log.warning("ingest worker %s lost the broker: %s", self.name, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        station_id = topics.station_of(topic)
        if station_id is not None and topics.leaf_of(topic) == HEALTH_LEAF:
            self.health.submit(station_id, payload)  # never blocks; sheds when full
            if msg.qos:
                client.ack(msg.mid, msg.qos)  # a heartbeat is sheddable: no need to hold it
            return
        self._events.put(_Pending(topic, payload, msg.mid, msg.qos))

    # ------------------------------------------------------------- events

    def _write_events(self) -> None:
        while True:
            first = self._events.get()
            if first is _STOP:
                return
            batch: list[_Pending] = [first]
            stop = False
            while len(batch) < self._settings.ingest_batch_max:
                try:
                    item = self._events.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._write_until_stored(batch)
            if stop:
                return

    def _write_until_stored(self, batch: list[_Pending]) -> None:
        """Apply a batch, then acknowledge it; while the database is down, keep trying."""
        messages = [(one.topic, one.payload) for one in batch]
        while True:
            failed = self.ingestor.stats.failed
            self.ingestor.handle(messages)
            if self.ingestor.stats.failed == failed or self._database_up():
                break  # stored, or refused row by row for reasons of their own (logged)
            self.retries += 1
            log.warning("database unreachable: %s events kept unacknowledged", len(batch))
            if self._stopping.wait(RETRY_S) and not self._database_up():
                return  # stopping with the database down: the broker keeps them
        for one in batch:
            if one.qos:
                self._client.ack(one.mid, one.qos)
        self.acked += len(batch)

    def _database_up(self) -> bool:
        try:
            with self._engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError:
            return False
        return True

    # ------------------------------------------------------------- counters

    def counters(self) -> dict[str, Any]:
        return {
            "connected": self._connected.is_set(),
            "subscribed": self.subscribed.is_set(),
            "health": {**self.health.stats.as_dict(), "backlog": self.health.backlog()},
            "health_queue": self.health.queue_stats(),
            "events": {
                **self.ingestor.stats.as_dict(),
                "queued": self._events.qsize(),
                "acked": self.acked,
                "retries": self.retries,
            },
        }

    def _report(self) -> None:
        while not self._stopping.wait(REPORT_S):
            self._write_state()

    def _write_state(self) -> None:
        row = {
            "name": self.name,
            "host": socket.gethostname()[:255],
            "pid": os.getpid(),
            "started_at": self._started_at,
            "updated_at": self._clock(),
            "counters": self.counters(),
        }
        try:
            with session_scope(self._engine) as session:
                connection = session.connection()
                insert = (
                    postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
                )
                statement = insert(IngestWorkerState.__table__)  # type: ignore[attr-defined]
                connection.execute(
                    statement.on_conflict_do_update(
                        index_elements=["name"],
                        set_={
                            k: statement.excluded[k]
                            for k in ("host", "pid", "started_at", "updated_at", "counters")
                        },
                    ),
                    [row],
                )
        except SQLAlchemyError:
            log.warning("could not record ingest worker %s's counters", self.name, exc_info=True)


def run_worker(settings: Settings, index: int, stop: threading.Event) -> None:
    """Run one worker until ``stop`` is set (the CLI sets it on SIGTERM / SIGINT)."""
    worker = IngestWorker(settings, index)
    worker.start()
    log.info("ingest worker %s running; group %s", worker.name, GROUP)
    try:
        stop.wait()
    finally:
        worker.stop()


def worker_totals(rows: list[IngestWorkerState], now: datetime, fresh_s: float) -> dict[str, Any]:
    """Per-worker counters and the sums of the health and event counters of live workers.

    A worker whose row is older than ``fresh_s`` is listed (``alive`` false) but still
    summed: what it stored stays stored.
    """
    totals: dict[str, dict[str, int]] = {"health": {}, "events": {}}
    listed = []
    for row in rows:
        alive = (now - row.updated_at).total_seconds() <= fresh_s
        listed.append(
            {"name": row.name, "host": row.host, "pid": row.pid, "alive": alive, **row.counters}
        )
        for part in ("health", "events"):
            for key, value in row.counters.get(part, {}).items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[part][key] = totals[part].get(key, 0) + value
    return {"workers": listed, "totals": totals}
