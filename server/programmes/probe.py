"""Is this stream URL audio? A short HTTP GET at save, so a typo is caught before 05:00.

The operator learns one of three things, and nothing more:

- a reachable audio stream (saved);
- not reachable from the server: saved with a warning (the channel may be down right
  now, or reachable from the stations but not from the server);
- not audio (an HTML page, an error page): refused.

The URL is typed by a user, so the check must not become a window into the server's
network (server-side request forgery). The host is resolved once, every address is
judged by :mod:`server.edge.outbound` (never loopback, link-local or this host; private
ranges only when allow-listed), and the request goes to the address that was judged,
so a second DNS answer cannot swap it. A redirect is followed only on the same host.
Neither the status code nor the content type of the far side is repeated to the
operator; the server log keeps the reason.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from urllib.parse import SplitResult, urljoin, urlsplit

import h11

from server.edge.outbound import Address, Network, own_addresses, refusal

log = logging.getLogger(__name__)

AUDIO_TYPES = ("audio/", "application/ogg", "video/mp2t", "application/x-mpegurl")
"""Content types relayed as audio (HLS playlists included)."""
SNIFF_BYTES = 4096
MAX_REDIRECTS = 3
REDIRECTS = frozenset({301, 302, 303, 307, 308})
DEFAULT_PORTS = {"http": 80, "https": 443}

Resolver = Callable[[str, int], list[Address]]


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    error: str | None = None
    """the URL is reachable and not audio: refuse the programme"""
    warning: str | None = None
    """the URL could not be checked: save, but tell the operator"""


@dataclass(frozen=True)
class StreamPolicy:
    """Where the check may go: the province's allowed private networks, and this server's
    own public address (``public_url``), never to be called back."""

    allowed: Sequence[Network] = ()
    own_endpoints: frozenset[tuple[Address, int]] = frozenset()


def policy_from(allowed: Sequence[Network], public_url: str) -> StreamPolicy:
    """The policy for a server published at ``public_url`` (resolved now, best effort)."""
    parts = urlsplit(public_url)
    port = parts.port or DEFAULT_PORTS.get(parts.scheme, 80)
    try:
        addresses = resolve(parts.hostname or "", port)
    except Unreachable:
        addresses = []
    return StreamPolicy(tuple(allowed), frozenset((a, port) for a in addresses))


class Unreachable(Exception):
    """The stream could not be checked; the message is for the server log only."""


def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` has, looked up once."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Unreachable(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(ip_address(str(info[4][0]).split("%")[0]) for info in infos))


def _looks_like_audio(head: bytes) -> bool:
    return (
        head.startswith((b"ID3", b"OggS", b"fLaC", b"RIFF", b"#EXTM3U", b"\x1aE\xdf\xa3"))
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # MPEG / ADTS sync
        or b"ftyp" in head[:12]
    )


def not_reachable(url: str) -> ProbeResult:
    return ProbeResult(False, warning=f"stream {url} could not be reached from the server")


def not_audio(url: str) -> ProbeResult:
    return ProbeResult(False, error=f"stream {url} is not audio")


def probe_stream(
    url: str, timeout_s: float, policy: StreamPolicy, resolver: Resolver = resolve
) -> ProbeResult:
    """GET the first bytes of ``url`` and judge them by Content-Type, then by magic bytes."""
    try:
        verdict = _probe(url, time.monotonic() + timeout_s, policy, resolver)
    except (Unreachable, OSError, ssl.SSLError, h11.ProtocolError) as exc:
        log.info("stream check of %s: not reachable (%s)", url, exc)
        return not_reachable(url)
    if verdict is not None:
        log.info("stream check of %s: not audio (%s)", url, verdict)
        return not_audio(url)
    return ProbeResult(True)


def _probe(url: str, deadline: float, policy: StreamPolicy, resolver: Resolver) -> str | None:
    """None when ``url`` is audio, else why not; raises Unreachable."""
    first = urlsplit(url)
    host = first.hostname
    if first.scheme not in DEFAULT_PORTS or not host:
        return f"scheme {first.scheme!r} or host missing"
    addresses = resolver(host, first.port or DEFAULT_PORTS[first.scheme])
    if not addresses:
        raise Unreachable(f"{host} has no address")
    own = own_addresses()
    for address in addresses:  # one forbidden answer condemns the name
        reason = refusal(address, policy.allowed, own)
        if reason is not None:
            raise Unreachable(f"{host} is {address}: {reason}")
    address = addresses[0]
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(current)
        if parts.scheme not in DEFAULT_PORTS or (parts.hostname or "").lower() != host.lower():
            raise Unreachable(f"redirected to another host: {current}")
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        if (address, port) in policy.own_endpoints:
            raise Unreachable("that is this server's own address")
        status, headers, head = _get(address, port, parts.scheme == "https", parts, deadline)
        if status in REDIRECTS and headers.get("location"):
            current = urljoin(current, headers["location"])
            continue
        if status >= 500:
            raise Unreachable(f"HTTP {status}")
        if status >= 400:
            return f"HTTP {status}"
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type.startswith(AUDIO_TYPES) or _looks_like_audio(head):
            return None
        return f"Content-Type {content_type or 'missing'!r} and no known audio bytes"
    raise Unreachable("too many redirects")


def _get(
    address: Address, port: int, tls: bool, parts: SplitResult, deadline: float
) -> tuple[int, dict[str, str], bytes]:
    """One GET to ``address`` for ``parts``: status, headers, up to SNIFF_BYTES of body."""
    host = parts.hostname or ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authority = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        authority += f":{parts.port}"

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unreachable("timed out")
        return left

    raw = socket.create_connection((str(address), port), timeout=remaining())
    with raw:
        sock = ssl.create_default_context().wrap_socket(raw, server_hostname=host) if tls else raw
        connection = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                ("Host", authority),
                ("User-Agent", "Loaxa stream check"),
                ("Icy-MetaData", "0"),
                ("Connection", "close"),
            ],
        )
        sock.sendall(connection.send(request) + connection.send(h11.EndOfMessage()))
        status, headers, head = 0, {}, b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                sock.settimeout(remaining())
                connection.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                if status in REDIRECTS or status >= 400:
                    return status, headers, head
            elif isinstance(event, h11.Data):
                head += bytes(event.data)
                if len(head) >= SNIFF_BYTES:
                    return status, headers, head
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return status, headers, head
