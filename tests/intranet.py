"""A web server on a private network that is not this host: the province's intranet.

The stream check never reaches loopback or this host's own addresses, so a test stream
("VOV1", an intranet Icecast) must live elsewhere. This makes a network namespace joined
to the host by a veth pair on a /30 of 10.231.0.0/16 and serves an
``http.server`` handler from inside it, in this process: the listening socket is created
while one thread has entered the namespace, and it stays there. Needs root and
iproute2; tests skip with the reason otherwise.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Network

import pytest

CLONE_NEWNET = 0x40000000
_names = itertools.count()


@dataclass(frozen=True)
class IntranetServer:
    base_url: str
    network: IPv4Network
    """the /30 the server sits on: what a province would allow-list"""
    host_address: str
    """the host's own end of the link (an address of this server)"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _taken_networks() -> str:
    return subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout


def _listen_inside(
    namespace: str, address: str, handler: type[BaseHTTPRequestHandler]
) -> ThreadingHTTPServer:
    """Create the server's socket from a thread that has entered ``namespace``."""
    made: list[ThreadingHTTPServer | BaseException] = []

    def enter_and_bind() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{namespace}") as fd:
                if libc.setns(fd.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            made.append(ThreadingHTTPServer((address, 0), handler))
        except BaseException as exc:  # handed to the caller
            made.append(exc)

    thread = threading.Thread(target=enter_and_bind)  # it dies with the namespace it entered
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


@contextmanager
def intranet_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[IntranetServer]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("an intranet server needs root and iproute2 (network namespaces)")
    tag = f"{os.getpid() % 100000}x{next(_names)}"
    namespace, outside, inside = f"lxi{tag}", f"lxo{tag}", f"lxn{tag}"
    taken = _taken_networks()
    network = next(
        n
        for n in (
            IPv4Network(f"10.231.{random.randrange(256)}.{4 * random.randrange(64)}/30")
            for _ in range(100)
        )
        if str(n) not in taken
    )
    host_address, server_address = (str(a) for a in list(network.hosts())[:2])
    try:
        _ip("netns", "add", namespace)
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("addr", "add", f"{host_address}/30", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", namespace, "addr", "add", f"{server_address}/30", "dev", inside)
        _ip("-n", namespace, "link", "set", inside, "up")
        server = _listen_inside(namespace, server_address, handler)
    except (subprocess.CalledProcessError, OSError) as exc:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        pytest.skip(f"cannot make a network namespace here: {exc}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield IntranetServer(
            f"http://{server_address}:{server.server_address[1]}", network, host_address
        )
    finally:
        server.shutdown()
        server.server_close()
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
