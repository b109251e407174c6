"""What both swarms share: worker processes over pipes, one thread driving many clients.

The health swarm (:mod:`loaxa.bench.swarm`) and the alert swarm (:mod:`loaxa.bench.alert_swarm`)
simulate a fleet the same way; the reasons are written in :mod:`loaxa.bench.swarm`:

* :class:`WorkerPool` (the parent side): a few ``spawn``ed worker processes, each owning
  a share of the stations, spoken to over pipes; a worker stops on ``stop`` or as soon as
  its pipe closes, so a crashed parent never leaves workers behind.
* :class:`LoopWorker` (the worker side): ONE thread drives every paho client of its
  process with paho's non-blocking API (``loop_read`` / ``loop_write`` / ``loop_misc``)
  over a ``selectors`` poller (epoll: plain ``select()`` stops at 1,024 descriptors). A
  socket is watched for writability only while bytes wait for it; keepalive bookkeeping
  runs every :data:`MISC_EVERY_S`; a dead connection is dropped, never reconnected here.

What each swarm does with its stations (publish health on a schedule, or run the node
core) is the subclasses' part: :meth:`LoopWorker._connect`, ``_handle``, ``_turn`` and the
hooks around them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import selectors
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Generic, Self, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.2
"""The longest a worker waits on its sockets before looking at its own schedule again."""
MISC_EVERY_S = 1.0
"""How often each client's keepalive bookkeeping (``loop_misc``) runs."""
CONNECT_POLL_EVERY = 50
"""Process CONNACKs after this many new connections, so none wait in a full buffer."""
_OK = MQTTErrorCode.MQTT_ERR_SUCCESS


class SwarmError(RuntimeError):
    """The swarm could not connect or a worker failed."""


@dataclass(frozen=True)
class SwarmReady:
    """How the swarm's connections came up."""

    connected: int
    refused: list[str]
    seconds: float


class Stop(Exception):
    """Raised inside the worker loop when the parent says stop or goes away."""


# ------------------------------------------------------------------ the worker side


@dataclass(eq=False, kw_only=True)
class Link:
    """One simulated station's connection, as the worker loop sees it."""

    index: int
    """its place in the worker's list (the selector's key data)"""
    station_id: str
    client: mqtt.Client | None = None
    """None once the connection is dropped (a reconnect starts a fresh client)"""
    sock: Any = None
    """the client's socket, kept: paho forgets it once the connection dies"""
    online: bool = False
    connected: bool = False
    """the broker accepted the CONNECT"""


L = TypeVar("L", bound=Link)


class LoopWorker(Generic[L]):
    """Drives its share of a swarm's clients from one thread (see the module doc).

    Subclasses fill :attr:`_links`, open each with :meth:`_connect` (which ends in
    :meth:`_open`), answer the parent's commands in :meth:`_handle` and do one turn of
    their own work in :meth:`_turn`.
    """

    def __init__(self, conn: Connection, host: str, port: int, keepalive_s: int) -> None:
        self._conn = conn
        self._host = host
        self._port = port
        self._keepalive = keepalive_s
        self._selector = selectors.DefaultSelector()
        self._links: list[L] = []
        self._blocked: set[int] = set()
        """Links whose socket is watched for writability."""
        self._refused: list[str] = []

    # -------------------------------------------------------- what subclasses provide

    def _connect(self, link: L) -> None:
        """Make the link's client and :meth:`_open` it."""
        raise NotImplementedError

    def _handle(self, message: tuple[Any, ...]) -> bool:
        """Act on a command from the parent; False if it is not one."""
        raise NotImplementedError

    def _turn(self) -> None:
        """One turn of the loop: wait on the sockets (:meth:`_poll`), then act."""
        raise NotImplementedError

    def _on_connected(self, link: L, client: mqtt.Client) -> None:
        """The broker accepted the link's CONNECT (subscribe, announce, …)."""

    def _wakeup(self) -> None:
        """A registered socket with a negative key (a thread's wake-up) is readable."""

    def _wants_write(self, link: L) -> bool | None:
        """Whether bytes wait for the link's socket; None: leave its watch alone."""
        client = link.client
        if client is None or not link.online:
            return None
        return client.want_write()

    def _flush(self, link: L) -> bool:
        """Send what the link's client gathered; False when the connection is dead."""
        return True

    def _flush_all(self) -> None:
        """Send what every client gathered this turn (for clients that do not write at once)."""

    def _close(self) -> None:
        """Release what the subclass holds besides the clients and the selector."""

    # -------------------------------------------------------- sockets

    def _open(self, link: L, client: mqtt.Client) -> None:
        """Connect the link's new ``client`` (``userdata`` = ``link.index``) and watch it."""
        link.client = client
        link.connected = False
        client.connect(self._host, self._port, self._keepalive)
        link.sock = client.socket()
        link.online = True
        self._selector.register(link.sock, selectors.EVENT_READ, link.index)
        self._watch(link)

    def _on_connect(
        self,
        client: mqtt.Client,
        index: int,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        link = self._links[index]
        if reason_code.is_failure:
            self._refused.append(f"{link.station_id}: {reason_code}")
            return
        link.connected = True
        self._on_connected(link, client)

    def _drop(self, link: L) -> bool:
        """Forget a connection (lost, or cut on purpose: no goodbye, so the broker sends
        the last will); the swarm never reconnects by itself. True if it was open."""
        if not link.online:
            return False
        link.online = False
        link.connected = False
        self._blocked.discard(link.index)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(link.sock)
        with contextlib.suppress(OSError):
            link.sock.close()
        link.client = None
        return True

    def _watch(self, link: L) -> None:
        """Poll for writability only while bytes wait for the socket."""
        wants = self._wants_write(link)
        if wants is None or wants == (link.index in self._blocked):
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if wants else 0)
        self._selector.modify(link.sock, events, link.index)
        if wants:
            self._blocked.add(link.index)
        else:
            self._blocked.discard(link.index)

    def _poll(self, timeout: float) -> None:
        for key, mask in self._selector.select(timeout):
            index = key.data
            if index is None:
                self._command()
                continue
            if index < 0:
                self._wakeup()
                continue
            link = self._links[index]
            client = link.client
            if client is None or not link.online:
                continue
            if mask & selectors.EVENT_READ and client.loop_read() != _OK:
                self._drop(link)
                continue
            if mask & selectors.EVENT_WRITE and (
                client.loop_write() != _OK or not self._flush(link)
            ):
                self._drop(link)
                continue
            self._watch(link)

    def _connect_all(self, timeout_s: float) -> None:
        """Open every link, then wait for the broker's answers; report ``ready``."""
        started = time.monotonic()
        links = self._links
        for link in links:
            self._connect(link)
            if link.index % CONNECT_POLL_EVERY == CONNECT_POLL_EVERY - 1:
                self._poll(0)
                self._flush_all()
        deadline = started + timeout_s
        while (
            sum(link.connected for link in links) + len(self._refused) < len(links)
            and any(link.online for link in links)
            and time.monotonic() < deadline
        ):
            self._poll(0.05)
            self._flush_all()
        connected = sum(link.connected for link in links)
        self._conn.send(("ready", connected, list(self._refused), time.monotonic() - started))

    def _keepalive_all(self) -> None:
        for link in self._links:
            client = link.client
            if link.online and client is not None and client.loop_misc() != _OK:
                self._drop(link)

    # -------------------------------------------------------- commands and the loop

    def _command(self) -> None:
        try:
            message = self._conn.recv()
        except EOFError:
            raise Stop from None
        if message == ("stop",):
            raise Stop
        if not self._handle(message):
            raise SwarmError(f"unknown swarm command {message!r}")

    def _set_up(self, connect_timeout_s: float) -> None:
        """Everything before the loop; connects every link."""
        self._connect_all(connect_timeout_s)

    def serve(self, connect_timeout_s: float) -> None:
        self._selector.register(self._conn, selectors.EVENT_READ, None)
        try:
            self._set_up(connect_timeout_s)
            next_misc = time.monotonic() + MISC_EVERY_S
            while True:
                self._turn()
                now = time.monotonic()
                if now >= next_misc:
                    next_misc = now + MISC_EVERY_S
                    self._keepalive_all()
                self._flush_all()
        except Stop:
            pass
        finally:
            for link in self._links:
                if link.online and link.client is not None:
                    with contextlib.suppress(Exception):
                        link.client.disconnect()
            with contextlib.suppress(Exception):
                self._flush_all()
            self._close()
            self._selector.close()


def run_worker(
    conn: Connection, build: Callable[[], LoopWorker[Any]], connect_timeout_s: float, what: str
) -> None:
    """A worker process's body: build the worker and serve until told to stop.

    A failure is reported to the parent, which raises it as :class:`SwarmError`.
    ``LOAXA_SWARM_PROFILE=<dir>`` writes a cProfile of each worker there.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    profile_to = os.environ.get("LOAXA_SWARM_PROFILE")
    try:
        worker = build()
        if profile_to:
            import cProfile

            cProfile.runctx(
                "worker.serve(connect_timeout_s)",
                globals(),
                {"worker": worker, "connect_timeout_s": connect_timeout_s},
                os.path.join(profile_to, f"swarm-{os.getpid()}.prof"),
            )
        else:
            worker.serve(connect_timeout_s)
    except Exception as exc:  # reported to the parent, which raises it as SwarmError
        log.exception("%s failed", what)
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


# ------------------------------------------------------------------ the parent side


class WorkerPool:
    """A swarm's stations spread over a few worker processes; use as a context manager."""

    what = "swarm worker"
    """How its processes are named in names and messages."""

    def __init__(self, host: str, port: int, stations: Sequence[Any], workers: int | None) -> None:
        if not stations:
            raise ValueError("a swarm needs at least one station")
        self.host = host
        self.port = port
        self.stations = list(stations)
        self.workers = max(1, min(workers or os.cpu_count() or 1, len(self.stations)))
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[Connection] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _spawn(
        self,
        target: Callable[..., None],
        args_of: Callable[[int], tuple[Any, ...]],
        name: str,
        reply_timeout_s: float,
    ) -> SwarmReady:
        """Start one process per worker (``target(pipe, *args_of(number))``); await ``ready``."""
        context = multiprocessing.get_context("spawn")  # never fork a threaded server
        started = time.monotonic()
        for number in range(self.workers):
            parent, child = context.Pipe()
            proc = context.Process(
                target=target,
                args=(child, *args_of(number)),
                name=f"{name}-{number}",
                daemon=True,
            )
            proc.start()
            child.close()
            self._procs.append(proc)
            self._conns.append(parent)
        with self._lock:
            replies = self._replies(reply_timeout_s)
        return SwarmReady(
            connected=sum(r[1] for r in replies),
            refused=[reason for r in replies for reason in r[2]],
            seconds=time.monotonic() - started,
        )

    def _ask(self, message: tuple[Any, ...], timeout_s: float = 30.0) -> list[tuple[Any, ...]]:
        """Send ``message`` to every worker and return each one's reply."""
        with self._lock:
            for conn in self._conns:
                conn.send(message)
            return self._replies(timeout_s)

    def _replies(self, timeout_s: float) -> list[tuple[Any, ...]]:
        """One reply from every worker, or SwarmError naming what went wrong."""
        deadline = time.monotonic() + timeout_s
        replies = []
        for conn in self._conns:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise SwarmError(f"a swarm worker did not answer within {timeout_s:.0f} s")
            try:
                reply = conn.recv()
            except EOFError as exc:
                raise SwarmError("a swarm worker died (see its traceback above)") from exc
            if reply[0] == "error":
                raise SwarmError(f"swarm worker failed: {reply[1]}")
            replies.append(reply)
        return replies

    def close(self, timeout_s: float = 10.0) -> None:
        """Disconnect every station and end the workers (killed if they do not stop)."""
        for conn in self._conns:
            with contextlib.suppress(OSError):  # the worker is gone already
                conn.send(("stop",))
        for proc in self._procs:
            proc.join(timeout_s)
            if proc.is_alive():
                log.warning("%s %s did not stop; killing it", self.what, proc.name)
                proc.kill()
                proc.join(timeout_s)
        for conn in self._conns:
            conn.close()
        self._procs.clear()
        self._conns.clear()
