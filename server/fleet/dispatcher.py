"""Route ``(topic, payload)`` from stations to handlers, validating on the way.

Knows topics and protocol models, not paho: the MQTT link hands it raw bytes and a
test hands it the same bytes without a broker. Anything a station sends is outside
input, so a payload that fails validation is logged and counted, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from loaxa_protocol import CommandReply, Event, Health, Status, topics

log = logging.getLogger(__name__)

StationMessage = Event | Status | Health | CommandReply
C = TypeVar("C")
Handler = Callable[[C, StationMessage], None]

MODELS: Mapping[str, type[BaseModel]] = {
    "event": Event,
    "status": Status,
    "health": Health,
    "reply": CommandReply,
}


@dataclass
class IngestStats:
    """Counters a technician (and a test) can read to see what the fleet sent."""

    received: int = 0
    applied: int = 0
    malformed: int = 0
    unroutable: int = 0
    unknown_station: int = 0
    unmatched_item: int = 0
    retried: int = 0
    """messages applied one by one because their batch failed"""
    failed: int = 0
    """messages that failed even on their own (logged with topic and reason)"""

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Inbound:
    """A validated message and the station whose topic it came on."""

    topic: str
    leaf: str
    station_id: str
    message: StationMessage


class Dispatcher(Generic[C]):
    """Validates station messages and calls the handler registered for the topic leaf.

    ``C`` is whatever context the handlers need (the ingest passes a DB session),
    so routing stays independent of storage.
    """

    def __init__(self, handlers: Mapping[str, Handler[C]], stats: IngestStats) -> None:
        unknown = set(handlers) - set(MODELS)
        if unknown:
            raise ValueError(f"no message model for topic leaf(s) {sorted(unknown)}")
        self._handlers = dict(handlers)
        self.stats = stats

    def decode(self, topic: str, payload: bytes) -> Inbound | None:
        """The validated message, or None (counted and logged) if it cannot be used."""
        self.stats.received += 1
        station_id = topics.station_of(topic)
        leaf = topics.leaf_of(topic)
        if station_id is None or leaf not in self._handlers:
            self.stats.unroutable += 1
            log.warning("ignoring message on unexpected topic %s", topic)
            return None
        try:
            message = MODELS[leaf].model_validate_json(payload)
        except ValidationError as exc:
            self.stats.malformed += 1
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "payload"
            log.warning("malformed %s from %s at %s: %s", leaf, station_id, where, first["msg"])
            return None
        assert isinstance(message, Event | Status | Health | CommandReply)
        if message.station_id != station_id:
            # The broker ACL confines a station to its own topics; a payload naming
            # another station is a bug or an attack, either way not to be applied.
            self.stats.malformed += 1
            log.warning("%s on %s names station %r; dropped", leaf, topic, message.station_id)
            return None
        return Inbound(topic, leaf, station_id, message)

    def deliver(self, inbound: Inbound, context: C) -> None:
        """Call the handler; its errors are the caller's (they are local bugs or DB faults)."""
        self._handlers[inbound.leaf](context, inbound.message)

    def dispatch(self, topic: str, payload: bytes, context: C) -> bool:
        """Decode and deliver one message; False if it was dropped."""
        inbound = self.decode(topic, payload)
        if inbound is None:
            return False
        self.deliver(inbound, context)
        return True
