"""What the server needs from a message bus, so publishing can be tested without a broker."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_S = 0.5
"""How long work after a publish waits for the broker to hold what was published."""


class Bus(Protocol):
    """Publishes to the broker. ``FleetLink`` is the real one; tests pass a fake."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Queue a message for delivery; must not block on the network."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until the broker holds what was queued so far."""
        ...


class NullBus:
    """The bus when MQTT is disabled (API-only runs): plans are built but go nowhere."""

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        log.debug("mqtt disabled; not publishing %s (%s bytes)", topic, len(payload))

    def flush(self, timeout_s: float) -> None:
        """Nothing is ever queued."""
