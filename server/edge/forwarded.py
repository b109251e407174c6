"""The client's address, taking ``X-Forwarded-For`` only from the proxies we run.

The audit log's source address and the per-address sign-in lock both read the client
address. Anyone may send ``X-Forwarded-For``, so believing it from any client (as
uvicorn does by default for 127.0.0.1) lets a local process write a false address into
the audit log and step around the lock by sending a new one each try. Here the header
counts only when the connection comes from one of ``trusted_proxies``; the chain is read
from the right, skipping our own proxies, and the first address they did not add is the
client. ``loaxa serve`` runs
uvicorn with ``proxy_headers=False`` so that this is the only place that decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from server.edge.outbound import Network


def in_networks(host: str, networks: Sequence[Network]) -> bool:
    try:
        address = ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in networks)


def forwarded_client(peer: str, forwarded_for: str, trusted: Sequence[Network]) -> str:
    """The client behind ``peer``: the right-most hop of the chain no trusted proxy is.

    A hop that is not an address ends the walk at the last trusted one: a proxy only
    appends addresses, so anything else was written by the client.
    """
    if not in_networks(peer, trusted):
        return peer
    client = peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        try:
            ip_address(hop)
        except ValueError:
            break
        client = hop
        if not in_networks(hop, trusted):
            break
    return client


class TrustedProxyMiddleware:
    """Rewrites the ASGI ``client`` only for requests from ``trusted`` proxies."""

    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client and self.trusted:
            peer, port = client
            if in_networks(peer, self.trusted):
                chain = ",".join(Headers(scope=scope).getlist("x-forwarded-for"))
                scope = dict(scope, client=(forwarded_client(peer, chain, self.trusted), port))
        await self.app(scope, receive, send)
