"""Delivers what the station reports: events through the durable outbox, heartbeats
through a bounded backlog (the rules are in ``core/outbox.py``).

Threads: events are sent and acknowledgements noted on the agent's loop only, so the
outbox needs no lock; paho's thread merely queues each PUBACK's message id (it calls
:meth:`Courier.acked` with its own lock held) and wakes the loop. Heartbeats come from
the probes' thread and, on a reconnect, from the loop: a lock keeps them in order.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from loaxa_protocol.errors import StorageError
from node_firmware.core.outbox import HealthBacklog, Outbox
from node_firmware.drivers.outbox_file import OutboxFile

log = logging.getLogger(__name__)


class Transport(Protocol):
    """The part of :class:`~node_firmware.drivers.mqtt_link.MqttLink` the courier uses."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int: ...


class Courier:
    def __init__(self, dir: Path, health_topic: str, wake: Callable[[], None]) -> None:
        self.file = OutboxFile(dir)
        self.outbox = Outbox()
        self.health_backlog = HealthBacklog()
        self._health_topic = health_topic
        self._wake = wake
        self._acked: deque[int] = deque()
        self._health_lock = threading.Lock()
        self._link: Transport | None = None

    def use(self, link: Transport) -> None:
        self._link = link

    @property
    def link(self) -> Transport:
        if self._link is None:
            raise RuntimeError("the courier has no link yet (call use())")
        return self._link

    def load(self) -> None:
        """At boot: the events a previous run left unacknowledged become the first to send."""
        try:
            self.outbox = self.file.load()
        except StorageError as exc:
            log.error("outbox: %s; events of this run are kept in memory only", exc)

    # ------------------------------------------------------------ events (the loop)

    def send_event(self, topic: str, payload: bytes, connected: bool) -> None:
        """On disk first, then to the broker if it is there (else at the next connect)."""
        entry = self.outbox.add(topic, payload)
        try:
            self.file.added(entry)
        except StorageError as exc:  # still sent; only a reboot before the PUBACK loses it
            log.error("outbox: %s", exc)
        if connected:
            self.send_events()

    def send_events(self) -> None:
        """Hand every event not yet handed over to paho, oldest first."""
        for entry in self.outbox.take_unsent():
            self.outbox.handed(entry, self.link.publish(entry.topic, entry.payload, qos=1))

    def acked(self, mid: int) -> None:
        """paho's thread, its lock held: note the id and wake the loop, nothing more.
        Noted at once, an ack is on disk before a power cut could make it a duplicate."""
        self._acked.append(mid)
        self._wake()

    def note_acks(self) -> None:
        while self._acked:
            entry = self.outbox.acked(self._acked.popleft())
            if entry is None:
                continue  # a heartbeat or status message, not an outbox entry
            try:
                self.file.acked(entry, self.outbox)
            except StorageError as exc:
                log.warning("outbox: %s", exc)

    def connected(self) -> None:
        """On (re)connect: events kept while offline or from before a reboot, in order,
        then the heartbeats held meanwhile."""
        self.send_events()
        self.publish_health(None)

    # ------------------------------------------------------------ heartbeats (any thread)

    def publish_health(self, fresh: bytes | None) -> None:
        """Send the held heartbeats and ``fresh``, or hold ``fresh`` while offline; the
        first heartbeat sent after drops carries their count."""
        with self._health_lock:  # held while publishing: two threads must not interleave
            if not self.link.connected:
                if fresh is not None:
                    self.health_backlog.hold(fresh)
                return
            held, dropped = self.health_backlog.drain()
            for payload in [*held, *([fresh] if fresh is not None else [])]:
                if dropped:
                    payload, dropped = _with_drop_count(payload, dropped), 0
                self.link.publish(self._health_topic, payload, qos=0)


def _with_drop_count(payload: bytes, dropped: int) -> bytes:
    """A held heartbeat that also says how many older ones were dropped."""
    doc = json.loads(payload)
    doc["health_dropped"] = dropped
    return json.dumps(doc, separators=(",", ":")).encode()
