"""Which broker address the next attempt dials: fail over along the configured list.

A station may know several addresses of its broker service (the nodes of a cluster,
``mqtt.fallbacks``). A connection that cannot be made, or that ends, moves the next
attempt to the next address, round the list: a dead node costs the station one failed
attempt, and the back-off (:mod:`node_firmware.core.backoff`, counted across the whole
list) still spreads a fleet's retries when every node is down. An address that works
is kept for as long as its connection lasts. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BrokerRotation:
    addresses: tuple[tuple[str, int], ...]
    index: int = 0

    def __post_init__(self) -> None:
        if not self.addresses:
            raise ValueError("a station needs at least one broker address")

    @property
    def current(self) -> tuple[str, int]:
        """The address the next attempt dials."""
        return self.addresses[self.index]

    def attempt_ended(self) -> BrokerRotation:
        """The attempt failed or its connection ended: the next address's turn."""
        return replace(self, index=(self.index + 1) % len(self.addresses))
