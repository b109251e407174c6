"""Which addresses a request the server makes on a user's behalf may reach.

The stream check fetches a URL an operator typed. Without a guard that is a window into
the server's own network: loopback services, the cloud metadata address, the database,
the broker. The rule, in order:

1. never: loopback, link-local (169.254/16 holds cloud metadata), multicast, unspecified,
   reserved, and every address of this host's own interfaces (so none of its ports);
2. public (globally routable) addresses: allowed;
3. anything else (private, shared carrier-grade NAT, documentation ranges): only inside a
   network the province allow-lists (``stream_allowed_networks``, e.g. its intranet
   Icecast).

Pure apart from reading the host's interface addresses; the caller resolves a name once
and connects to the address checked here, so a second DNS answer cannot swap it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

import psutil

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def own_addresses() -> frozenset[Address]:
    """Every address of this host's interfaces, read now (interfaces come and go)."""
    found: set[Address] = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            try:
                found.add(ip_address(entry.address.split("%")[0]))
            except ValueError:  # a MAC address
                continue
    return frozenset(found)


def refusal(
    address: Address, allowed: Sequence[Network], own: Iterable[Address] = ()
) -> str | None:
    """Why ``address`` may not be reached (for the server log), or None when it may."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_reserved:
        return "reserved"
    if address in set(own):
        return "an address of this server"
    if address.is_global:
        return None
    if any(address in network for network in allowed):
        return None
    return "private, and not in stream_allowed_networks"
