"""Whether the station's own network just came back: the cue to try the broker at once.

The reconnect back-off (:mod:`node_firmware.core.backoff`) is right for a broker that is
down: waits drawn at random up to a minute keep a fleet from stampeding it. It is wrong
for a station whose *own* link was cut: when the link returns, the wait it drew while
cut off can still have most of a minute to run, and an alert waits with it. The
station therefore watches what it can see of its network — links with a carrier, its
addresses, its default routes, whether it has a route to the broker — and when
something *appears* there (a link up, an address, a route), its network is likely
usable again and the back-off starts over with only a small jitter
(:meth:`~node_firmware.core.backoff.ReconnectBackoff.network_returned`).

Disappearances are not a cue: nothing can be reached through a link that went away,
and the back-off is already waiting for it. Pure: the driver
(:mod:`node_firmware.drivers.netwatch`) reads the system and passes snapshots in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NetworkSnapshot:
    """What the station sees of its network at one instant (loopback left out)."""

    links_up: frozenset[str] = frozenset()
    """interfaces administratively up *with* a carrier (a cable, a radio attached)"""
    addresses: frozenset[str] = frozenset()
    """``interface/address`` of every address on an interface that is up"""
    default_routes: frozenset[str] = frozenset()
    """``interface/gateway`` of every default route"""
    route_to_broker: str | None = None
    """the source address the kernel would use towards the broker, None if unreachable
    (no route) or not known yet (never connected)"""


def network_returned(before: NetworkSnapshot, after: NetworkSnapshot) -> str | None:
    """Why ``after`` looks like the network came back since ``before``, or None.

    Only an appearance counts, and only on a network that can carry traffic at all
    (some link with a carrier): a new link, a new address, a new default route, or a
    route to the broker where there was none.
    """
    if not after.links_up:
        return None
    if new := sorted(after.links_up - before.links_up):
        return f"link up: {', '.join(new)}"
    if new := sorted(after.addresses - before.addresses):
        return f"new address: {', '.join(new)}"
    if new := sorted(after.default_routes - before.default_routes):
        return f"new default route: {', '.join(new)}"
    if before.route_to_broker is None and after.route_to_broker is not None:
        return f"route to the broker from {after.route_to_broker}"
    return None
