"""MQTT brokers that Loaxa can start by itself: Mosquitto when installed, amqtt otherwise.

`loaxa demo` must work on a fresh machine with nothing but Python, so it needs a
broker it can embed: amqtt, run in its own thread with its own asyncio loop. When a
``mosquitto`` binary exists we prefer it even for the demo, because it is the engine
production runs and it is much faster. Both are driven through one small interface
(:class:`MqttBroker`) so callers never care which engine they got.

amqtt speaks MQTT 3.1.1 only, and with anonymous access it keeps no offline queue
for persistent sessions (see docs/protocol.md, "Brokers"); Loaxa's protocol relies on
retained plans and the last will, which amqtt does implement, so the demo is faithful.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

from loaxa.broker_config import (
    CA_CERT_FILE,
    INGEST_ENV_FILE,
    SERVER_ENV_FILE,
    BrokerOptions,
    StationAccount,
    load_station_accounts,
    parse_server_env,
    write_broker_dir,
)
from loaxa_protocol.errors import LoaxaError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
MOSQUITTO_FALLBACK_PATH = "/usr/sbin/mosquitto"

_CONNACK_OK = bytes.fromhex("20020000")
_DISCONNECT = bytes.fromhex("e000")


class BrokerError(LoaxaError):
    """A broker could not be found, started or stopped."""


class MqttBroker(Protocol):
    """What the demo and the tests need from a broker, whichever engine runs it."""

    host: str

    @property
    def port(self) -> int: ...

    @property
    def engine(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def start(self, timeout: float = 10.0) -> None: ...

    def stop(self) -> None: ...


def find_mosquitto() -> str | None:
    """The mosquitto binary on PATH, or Debian's sbin path (not on a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(MOSQUITTO_FALLBACK_PATH, os.X_OK):
        return MOSQUITTO_FALLBACK_PATH
    return None


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free right now (the caller must still handle losing a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _connect_packet(username: str | None, password: str | None) -> bytes:
    """MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keep-alive 60 s, an
    empty client id (the broker assigns one) and the credentials, if any."""

    def field(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    flags, payload = 0x02, field("")
    if username is not None:
        flags, payload = flags | 0x80, payload + field(username)
        if password is not None:
            flags, payload = flags | 0x40, payload + field(password)
    body = field("MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big") + payload
    remaining, length = b"", len(body)
    while True:  # the "remaining length" varint
        length, digit = divmod(length, 128)
        remaining += bytes([digit | (0x80 if length else 0)])
        if not length:
            return b"\x10" + remaining + body


def mqtt_ping(
    host: str,
    port: int,
    timeout: float = 1.0,
    username: str | None = None,
    password: str | None = None,
) -> bool:
    """True if an MQTT broker answers CONNECT with an accepting CONNACK.

    A bare TCP accept proves little (any process may hold the port); a CONNACK proves
    the broker is serving MQTT — and, with credentials, that it accepts them.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_connect_packet(username, password))
            reply = b""
            while len(reply) < len(_CONNACK_OK):
                chunk = sock.recv(len(_CONNACK_OK) - len(reply))
                if not chunk:
                    return False
                reply += chunk
            with contextlib.suppress(OSError):
                sock.sendall(_DISCONNECT)
            return reply == _CONNACK_OK
    except OSError:
        return False


class _Lifecycle:
    """Context-manager plumbing shared by both engines."""

    def start(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MosquittoBroker(_Lifecycle):
    """A private Mosquitto process on its own port with its own config and log.

    ``stop()`` then ``start()`` restarts it on the *same* port, which is how tests
    simulate a broker outage; ``stop(hard=True)`` kills it like a power cut.
    With ``persistence=True`` retained messages survive a restart, as in production.
    """

    engine = "mosquitto"

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        workdir: Path | None = None,
        binary: str | None = None,
        persistence: bool = False,
        extra_config: str = "",
    ) -> None:
        self.host = host
        self._port = port
        self._binary = binary or find_mosquitto()
        self._owned_tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._owned_tmp = tempfile.TemporaryDirectory(prefix="loaxa-mosquitto-")
            workdir = Path(self._owned_tmp.name)
        self.workdir = workdir
        self.persistence = persistence
        self.extra_config = extra_config
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log_text(self) -> str:
        """Everything mosquitto logged, across restarts, plus its stderr."""
        parts = []
        for path in dict.fromkeys((self.log_path, self._stderr_path)):
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(p for p in parts if p)

    @property
    def _stderr_path(self) -> Path:
        return self.workdir / "mosquitto.stderr"

    def _write_config(self) -> None:
        lines = [
            f"listener {self._port} {self.host}",
            "allow_anonymous true",
            "set_tcp_nodelay true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # Run as whoever we are: as root, mosquitto would otherwise drop to the
            # 'mosquitto' user and could not write its log in our temp dir.
            f"user {getpass.getuser()}",
            self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, on the same port) and return once it answers MQTT."""
        if self.running:
            return
        if self._binary is None:
            raise BrokerError(
                "mosquitto is not installed (looked on PATH and at "
                f"{MOSQUITTO_FALLBACK_PATH}); install it with 'apt-get install mosquitto'"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A port picked by free_port() can be taken before mosquitto binds it; only the
        # first start may move to another port, a restart must keep its port.
        attempts = 5 if self._port == 0 else 1
        pick_new_port = self._port == 0
        for attempt in range(attempts):
            if pick_new_port:
                self._pick_ports()
            try:
                self._launch(timeout)
                return
            except BrokerError:
                if attempt == attempts - 1 or "Address already in use" not in self.log_text():
                    raise
                log.info("mosquitto lost the race for port %s, retrying", self._port)

    def _pick_ports(self) -> None:
        self._port = free_port(self.host)

    def _answers(self) -> bool:
        """Whether the broker serves MQTT to us (an anonymous CONNECT is accepted)."""
        return mqtt_ping(self.host, self._port, 0.5)

    def _launch(self, timeout: float) -> None:
        assert self._binary is not None
        self._write_config()
        log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self._stderr_path, "ab") as stderr:
            self._proc = subprocess.Popen(
                [self._binary, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                cwd=self.workdir,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"mosquitto exited with code {self._proc.returncode} on port {self._port}:\n"
                    f"{self.log_text()[-2000:]}"
                )
            # Our own log saying "running" rules out answering some other broker
            # that happens to hold the port.
            if self._logged_running(log_offset) and self._answers():
                log.debug("mosquitto pid %s ready on %s:%s", self._proc.pid, self.host, self._port)
                return
            time.sleep(0.02)
        self._terminate(hard=True)
        raise BrokerError(f"mosquitto did not start on port {self._port} within {timeout} s")

    def _logged_running(self, offset: int) -> bool:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(offset)
                return b" running" in fh.read()
        except FileNotFoundError:
            return False

    def stop(self, hard: bool = False) -> None:
        """Stop it: SIGTERM (clean, saves persistence) or SIGKILL with ``hard=True``."""
        self._terminate(hard)

    def _terminate(self, hard: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def close(self) -> None:
        """Stop and remove the temp dir if we created it."""
        self.stop()
        if self._owned_tmp is not None:
            self._owned_tmp.cleanup()
            self._owned_tmp = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ProductionMosquitto(MosquittoBroker):
    """Mosquitto running exactly the directory ``loaxa broker config`` writes.

    Per-station accounts with the hashes the server stored, the ACL derived from the
    protocol's topic table, the server's own account, TLS for stations and persistence:
    :func:`loaxa.broker_config.write_broker_dir` writes the directory, nothing is added.
    Tests and the local stack run it so that what they prove holds for a province's broker,
    not only for an open one. :meth:`load_database` does what an operator does after
    registering stations — re-run the generator on the server's database and SIGHUP the
    broker, which re-reads the password file and the ACL without dropping anyone.
    """

    def __init__(self, workdir: Path | None = None, binary: str | None = None) -> None:
        # The generated config serves plain MQTT on the loopback only.
        super().__init__(host=DEFAULT_HOST, workdir=workdir, binary=binary, persistence=True)
        self.tls_port = 0
        self.accounts: tuple[StationAccount, ...] = ()

    @property
    def log_path(self) -> Path:
        return self._stderr_path  # the generated config logs to stderr

    @property
    def ca_file(self) -> Path:
        """The CA stations pin to verify the broker's TLS certificate."""
        return self.workdir / CA_CERT_FILE

    @property
    def server_credentials(self) -> tuple[str, str]:
        """The server's (username, password) from the generated ``server.env``."""
        env = self.workdir / SERVER_ENV_FILE
        found = parse_server_env(env.read_text()) if env.exists() else None
        if found is None:
            raise BrokerError(f"{env} has no server account yet: start() the broker first")
        return found

    @property
    def ingest_credentials(self) -> tuple[str, str]:
        """The ingest workers' (username, password) from the generated ``ingest.env``."""
        env = self.workdir / INGEST_ENV_FILE
        found = parse_server_env(env.read_text()) if env.exists() else None
        if found is None:
            raise BrokerError(f"{env} has no ingest account yet: start() the broker first")
        return found

    def _pick_ports(self) -> None:
        super()._pick_ports()
        self.tls_port = free_port(self.host)

    def _answers(self) -> bool:
        username, password = self.server_credentials
        return mqtt_ping(self.host, self._port, 0.5, username, password)

    def _write_config(self) -> None:
        # As whoever we are: as root, mosquitto would otherwise drop to the 'mosquitto'
        # user and could not read the files we own in our temp dir.
        options = BrokerOptions(self._port, self.tls_port, run_as_user=getpass.getuser())
        write_broker_dir(self.workdir, self.accounts, options)

    def load(self, accounts: Sequence[StationAccount], timeout: float = 10.0) -> None:
        """Rewrite the files for ``accounts`` and, if running, make Mosquitto reload them.

        Returns once the reload is done: Mosquitto logs it before re-reading, in its one
        event loop, so a CONNECT answered after the log line is judged by the new files.
        """
        self.accounts = tuple(accounts)
        if not self.running:
            return  # start() writes them
        before = self.log_text().count("Reloading config")
        self._write_config()
        assert self._proc is not None
        self._proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.log_text().count("Reloading config") == before or not self._answers():
            if time.monotonic() > deadline:
                raise BrokerError(f"mosquitto did not reload its accounts within {timeout} s")
            time.sleep(0.02)

    def load_database(self, database_url: str) -> None:
        """Every station registered in the server's database, as ``loaxa broker config``."""
        self.load(load_station_accounts(database_url))


class EmbeddedBroker(_Lifecycle):
    """amqtt running in a daemon thread with its own asyncio loop.

    The caller's thread never sees asyncio: ``start()`` blocks until the listener is
    bound and answers MQTT, ``stop()`` blocks until amqtt has shut down. A restart
    reuses the port picked by the first start; retained messages do not survive it
    (amqtt keeps them in memory only).
    """

    engine = "amqtt"

    def __init__(self, host: str = DEFAULT_HOST, port: int = 0) -> None:
        self.host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._ready.is_set()

    def _config(self) -> dict[str, object]:
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self._port}"}},
            # Only anonymous auth: amqtt's default plugin set also publishes $SYS every
            # 20 s and logs every packet, which the demo does not want.
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }

    def start(self, timeout: float = 10.0) -> None:
        """Start amqtt and return once it answers MQTT on :attr:`port`."""
        if self.running:
            return
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="loaxa-amqtt", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BrokerError(f"amqtt did not start within {timeout} s")
        if self._error is not None:
            self._thread.join(timeout)
            self._thread = None
            raise BrokerError(f"amqtt failed to start: {self._error}") from self._error
        if not mqtt_ping(self.host, self._port, timeout):
            self.stop()
            raise BrokerError(f"amqtt is bound to {self.host}:{self._port} but does not answer")

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from amqtt.broker import Broker  # imported here: only the demo needs amqtt

        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            broker = Broker(self._config())
            await broker.start()
            if self._port == 0:
                # amqtt has no public accessor for the bound address of port 0.
                server = broker._servers["default"].instance
                self._port = int(server.sockets[0].getsockname()[1])
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        log.info("amqtt broker listening on %s:%s", self.host, self._port)
        self._ready.set()
        await self._stop_requested.wait()
        await broker.shutdown()

    def stop(self) -> None:
        """Shut amqtt down cleanly (clients are disconnected) and join its thread."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        self._thread = None
        if thread is None or loop is None or stop_requested is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing to stop
            loop.call_soon_threadsafe(stop_requested.set)
        thread.join(timeout=15)
        if thread.is_alive():
            raise BrokerError("amqtt did not shut down within 15 s")
        self._ready.clear()

    def close(self) -> None:
        self.stop()


def start_broker(
    prefer: Literal["auto", "mosquitto", "amqtt"] = "auto",
    host: str = DEFAULT_HOST,
    port: int = 0,
    workdir: Path | None = None,
) -> MosquittoBroker | EmbeddedBroker:
    """Start the best broker available and return it running.

    ``auto`` runs Mosquitto if its binary exists (the production engine) and falls
    back to embedded amqtt; ``mosquitto`` fails if it is missing; ``amqtt`` always
    embeds. Call ``stop()`` (or ``close()``) on the result when done.
    """
    broker: MosquittoBroker | EmbeddedBroker
    if prefer == "amqtt" or (prefer == "auto" and find_mosquitto() is None):
        broker = EmbeddedBroker(host, port)
    elif prefer in ("auto", "mosquitto"):
        broker = MosquittoBroker(host, port, workdir=workdir)
    else:
        raise ValueError(f"unknown broker preference {prefer!r}")
    broker.start()
    log.info("MQTT broker (%s) on %s:%s", broker.engine, broker.host, broker.port)
    return broker
