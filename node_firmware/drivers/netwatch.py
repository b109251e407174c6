"""Watch the station's network and say when it came back (the decision is in the core).

Once a second it reads what the kernel shows this process's network namespace —
``/sys/class/net/*/{operstate,carrier}``, the addresses (an ``ioctl`` for IPv4,
``/proc/net/if_inet6``), the default routes (``/proc/net/route``,
``/proc/net/ipv6_route``) and whether a route to the broker exists (a UDP ``connect``,
which looks the route up and sends nothing) — and hands the
snapshots to :func:`node_firmware.core.network.network_returned`. A poll costs a few
small file reads; polling, unlike a netlink socket, also sees a modem's PPP link that
is replaced rather than changed. No psutil: the station distribution does without it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from node_firmware.core.network import NetworkSnapshot, network_returned

log = logging.getLogger(__name__)

POLL_S = 1.0
SYS_NET = Path("/sys/class/net")
_DOWN_STATES = {"down", "lowerlayerdown", "notpresent", "dormant"}
_SIOCGIFADDR = 0x8915


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:  # carrier reads EINVAL on an interface that is administratively down
        return ""


def _links_up() -> frozenset[str]:
    up = set()
    with contextlib.suppress(OSError):
        for entry in SYS_NET.iterdir():
            if entry.name == "lo":
                continue
            if _read(entry / "carrier") == "1" and _read(entry / "operstate") not in _DOWN_STATES:
                up.add(entry.name)
    return frozenset(up)


def _addresses(links: frozenset[str]) -> frozenset[str]:
    """``interface/address`` on the links that are up: the primary IPv4 address, all IPv6."""
    found = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in links:
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):  # EADDRNOTAVAIL: no IPv4 address
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                found.add(f"{name}/{socket.inet_ntoa(reply[20:24])}")
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            fields = line.split()
            if len(fields) == 6 and fields[5] in links:
                found.add(f"{fields[5]}/{fields[0]}")
    return frozenset(found)


def _default_routes() -> frozenset[str]:
    routes = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 1:
                routes.add(f"{fields[0]}/{fields[2]}")
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/ipv6_route").read_text().splitlines():
            fields = line.split()
            default = len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00"
            if default and fields[9] != "lo":
                routes.add(f"{fields[9]}/{fields[4]}")
    return frozenset(routes)


def _route_to(peer: tuple[str, int] | None) -> str | None:
    """The source address towards ``peer``, or None without a route (nothing is sent)."""
    if peer is None:
        return None
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(peer[:2])
            return str(probe.getsockname()[0])
    except OSError:
        return None


def snapshot(broker: tuple[str, int] | None) -> NetworkSnapshot:
    links = _links_up()
    return NetworkSnapshot(
        links_up=links,
        addresses=_addresses(links),
        default_routes=_default_routes(),
        route_to_broker=_route_to(broker),
    )


class NetworkWatcher:
    """A daemon thread that calls ``on_return(reason)`` when the network came back.

    ``broker`` returns the broker's address as last connected (None before the first
    connection: a station does not resolve names just to watch).
    """

    def __init__(
        self,
        on_return: Callable[[str], None],
        broker: Callable[[], tuple[str, int] | None],
        poll_s: float = POLL_S,
    ) -> None:
        self._on_return = on_return
        self._broker = broker
        self._poll_s = poll_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netwatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Safe before ``start`` too: an agent that never ran still shuts down."""
        self._stopping.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        before = snapshot(self._broker())
        while not self._stopping.wait(self._poll_s):
            try:
                after = snapshot(self._broker())
                if (reason := network_returned(before, after)) is not None:
                    log.debug("network came back (%s)", reason)
                    self._on_return(reason)
                before = after
            except Exception:  # the watcher is an accelerator: it must never take the link down
                log.exception("network watch failed; trying again next poll")
