"""A Loaxa installation made of real processes that a fault test can break.

Each part runs the way a province runs it, so a test can kill it, cut it off and
bring it back:

- :class:`SecureBroker`: Mosquitto with exactly the directory ``loaxa broker config``
  writes (per-station accounts, the ACL, persistence, TLS for stations), regenerated
  from the server's database after stations register, and reloaded with SIGHUP.
- :class:`ServerProcess`: ``python -m loaxa serve`` on its own data directory; kill it
  (``kill -9``) and start it again on the same data and port.
- :class:`StationProcess`: ``python -m loaxa node`` with the config the server issued
  at registration (simulated relay and player: no sound card here), optionally inside
  a network namespace.

The test talks to the server only through its HTTP API, as a technician's browser does.
"""

from __future__ import annotations

import getpass
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from loaxa.broker import find_mosquitto, free_port
from loaxa.broker_config import (
    CA_CERT_FILE,
    CONF_FILE,
    SERVER_ENV_FILE,
    BrokerOptions,
    load_station_accounts,
    parse_server_env,
    write_broker_dir,
)
from loaxa.stack import LocalStack
from loaxa_protocol import Keyring, Verified, open_envelope
from node_firmware.config import NodeConfig
from node_firmware.drivers.state_store import StateStore
from tests.node_process import wait_until

FINAL_ITEM_STATES = {"played", "failed", "interrupted", "skipped", "missed"}
COMMUNE = ("01273", 22.666, 106.257)
"""A commune of Cao Bằng (the seeded province) for every fault station."""


def _stop_process(process: subprocess.Popen[bytes] | None, hard: bool) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class _Child:
    """A process this harness started and may stop (SIGTERM) or kill (SIGKILL)."""

    _process: subprocess.Popen[bytes] | None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def kill(self) -> None:
        """``kill -9``: a crash or power cut; no shutdown code runs, writes stop mid-way."""
        _stop_process(self._process, hard=True)
        self._process = None

    def stop(self) -> None:
        """A clean stop (SIGTERM), as systemd stops a service."""
        _stop_process(self._process, hard=False)
        self._process = None


@dataclass
class SecureBroker(_Child):
    """Mosquitto running the generated production configuration."""

    directory: Path
    hosts: tuple[str, ...] = ()
    """Extra names for the broker certificate (a namespace station dials an address)."""
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    _process: subprocess.Popen[bytes] | None = None
    started: bool = False
    """Started once already: its ports are its own from then on."""

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def ca_file(self) -> Path:
        return self.directory / CA_CERT_FILE

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def server_credentials(self) -> tuple[str, str]:
        credentials = parse_server_env((self.directory / SERVER_ENV_FILE).read_text())
        assert credentials is not None, "loaxa broker config wrote no server account"
        return credentials

    def configure(self, database_url: str | None = None) -> None:
        """Write the directory as ``loaxa broker config`` does: from the stations in the
        server's database (none yet when ``database_url`` is None)."""
        accounts = load_station_accounts(database_url) if database_url else []
        options = BrokerOptions(
            port=self.port,
            tls_port=self.tls_port,
            hosts=self.hosts,
            # As root Mosquitto would drop to the 'mosquitto' user and could not read
            # the files a test wrote; production keeps the default.
            run_as_user=getpass.getuser(),
        )
        write_broker_dir(self.directory, accounts, options)

    def start(self, timeout: float = 10) -> None:
        """Start (or restart on the same ports); the first start moves to other ports if
        another process took one of its own meanwhile."""
        binary = find_mosquitto()
        assert binary, "mosquitto is not installed (apt-get install mosquitto)"
        for attempt in range(3):
            offset = self.log_size()
            with open(self.log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [binary, "-c", str(self.directory / CONF_FILE)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            deadline = time.monotonic() + timeout
            while not _answers_mqtt(self.host, self.port):
                if self._process.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            else:
                self.started = True
                return
            lost_race = self._logged_since(offset, "Address already in use")
            self.kill()
            if self.started or not lost_race or attempt == 2:
                raise AssertionError(f"mosquitto did not start:\n{self.log_text()[-2000:]}")
            self.port, self.tls_port = free_port(), free_port()
            self.configure()

    def reload(self, database_url: str) -> None:
        """Re-run the generator for newly registered stations, then SIGHUP (README.txt)."""
        self.configure(database_url)
        assert self._process is not None and self._process.poll() is None
        offset = self.log_size()
        self._process.send_signal(signal.SIGHUP)
        wait_until(lambda: self._logged_since(offset, "Reloading config."), 5, "the reload")

    def _logged_since(self, offset: int, text: str) -> bool:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return text.encode() in log.read()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def clients_connected_since(self, offset: int) -> set[str]:
        """Client ids that connected after the log was ``offset`` bytes long."""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return set(re.findall(r"New client connected from \S+ as (\S+) ", text))


def _answers_mqtt(host: str, port: int) -> bool:
    """Whether an MQTT broker answers a CONNECT on ``host:port`` with a CONNACK, accepting
    or not (an anonymous CONNECT is refused by the generated config, and that is fine)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.settimeout(0.5)
            # CONNECT, MQTT 3.1.1, clean session, keepalive 5, client id "p"
            sock.sendall(bytes([0x10, 13, 0, 4, 77, 81, 84, 84, 4, 2, 0, 5, 0, 1, 112]))
            return sock.recv(4)[:1] == b"\x20"
    except OSError:
        return False


@dataclass
class ServerProcess(_Child):
    """``loaxa serve`` as its own process, on a data directory that outlives it."""

    data_dir: Path
    broker: SecureBroker
    listen_host: str = "127.0.0.1"
    public_host: str = "127.0.0.1"
    node_mqtt_host: str | None = None
    """What stations dial (a namespace station: the host's veth address, TLS port)."""
    env_overrides: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    api: LocalStack = field(init=False)
    _process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    served: bool = False
    """Started once already: its port is its own from then on."""

    def __post_init__(self) -> None:
        self.api = LocalStack(
            self.data_dir, self.broker.host, self.broker.port, http_port=self.port
        )
        self.api.admin_password = self.api._admin_password()

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'server' / 'loaxa.db'}"

    @property
    def base_url(self) -> str:
        return f"http://{self.public_host}:{self.port}"

    def _env(self) -> dict[str, str]:
        username, password = self.broker.server_credentials()
        env = {
            **os.environ,
            "LOAXA_DATA_DIR": str(self.data_dir / "server"),
            "LOAXA_MQTT_HOST": self.broker.host,
            "LOAXA_MQTT_PORT": str(self.broker.port),
            "LOAXA_MQTT_USERNAME": username,
            "LOAXA_MQTT_PASSWORD": password,
            "LOAXA_PUBLIC_URL": self.base_url,
            "LOAXA_BOOTSTRAP_ADMIN_USERNAME": self.api.admin_username,
            "LOAXA_BOOTSTRAP_ADMIN_PASSWORD": self.api.admin_password,
            **self.env_overrides,
        }
        if self.node_mqtt_host:
            env["LOAXA_NODE_MQTT_HOST"] = self.node_mqtt_host
            env["LOAXA_NODE_MQTT_PORT"] = str(self.broker.tls_port)
            env["LOAXA_MQTT_TLS"] = "false"  # the server itself stays on loopback
        return env

    def start(self, timeout: float = 60) -> None:
        """Start (or restart on the same port and data) and sign in as the administrator.

        A port from :func:`free_port` can be taken by another process before the server
        binds it (the machine runs other suites); only the very first start may then
        move to another port, a restart must keep its own."""
        for attempt in range(3):
            self.starts += 1
            log = open(self.data_dir / f"server-{self.starts}.log", "wb")  # noqa: SIM115
            with log:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "loaxa", "serve", "--host", self.listen_host,
                     "--port", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=self._env(),
                )  # fmt: skip
            try:
                wait_until(self._ready, timeout, "the server to answer HTTP")
                break
            except AssertionError:
                lost_race = "address already in use" in self.log_tail()
                if self.served or not lost_race or attempt == 2:
                    raise
                self.port = self.api.http_port = free_port()
        self.served = True
        self.api.token = self.api._issue_token()

    def _ready(self) -> bool:
        import httpx

        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"loaxa serve exited:\n{self.log_tail()}")
        try:
            # Unauthenticated: a 401 proves the application is up and routing.
            response = httpx.get(f"http://127.0.0.1:{self.port}/api/v1/system", timeout=1)
        except httpx.HTTPError:
            return False
        return response.status_code < 500

    def log_tail(self, chars: int = 3000) -> str:
        path = self.data_dir / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    # ------------------------------------------------------------ what a technician reads

    def get(self, path: str) -> Any:
        return self.api.api("GET", path)

    def events(self, station_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/api/v1/stations/{station_id}/events"))

    def station(self, station_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v1/stations/{station_id}"))

    def register(self, name: str, **node_overrides: Any) -> NodeConfig:
        """Register a station through the API; its broker account goes live at once."""
        config = self.api.register_station(name, *COMMUNE, **node_overrides)
        self.broker.reload(self.database_url)
        return config


@dataclass
class StationProcess(_Child):
    """``loaxa node`` as its own process (optionally in a network namespace)."""

    config: NodeConfig
    workdir: Path
    netns: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    module: str = "loaxa"
    """``python -m <module> node``: another entry point wraps the agent (a wrong clock)."""
    _process: subprocess.Popen[bytes] | None = None
    boots: int = 0

    @property
    def station_id(self) -> str:
        return self.config.station_id

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.station_id}.yaml"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.station_id}.log"

    def start(self) -> None:
        self.boots += 1
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            yaml.safe_dump(self.config.model_dump(mode="json")), encoding="utf-8"
        )
        argv = [sys.executable, "-m", self.module, "node", "--config", str(self.config_path)]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== boot {self.boots} at {datetime.now(UTC)} =====\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **self.extra_env},
            )

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def station_config(config: NodeConfig, data_dir: Path, **mqtt: Any) -> NodeConfig:
    """The issued config with a simulated relay and player and its own data directory."""
    return config.model_copy(
        update={
            "data_dir": data_dir,
            "relay": config.relay.model_copy(update={"driver": "sim"}),
            "player": config.player.model_copy(update={"driver": "sim"}),
            "mqtt": config.mqtt.model_copy(update=mqtt),
        }
    )


def stored_plan(config: NodeConfig) -> Any:
    """What the station's next boot will obey: the stored plan, checked as the agent
    checks it (integrity of the state file, then signature against its trusted keys).

    Returns the verified :class:`~loaxa_protocol.Plan`, or a string saying what is wrong.
    """
    plan_raw, _memory = StateStore(Path(config.data_dir) / "state").load()
    if plan_raw is None:
        return "no sound stored plan"
    keyring = Keyring()
    for key in config.trusted_keys:
        keyring.add(key.kid, key.public_key, set(key.purposes), key.valid_until)
    opened = open_envelope(
        plan_raw, keyring, datetime.now(UTC), {config.station_id}, check_expiry=False
    )
    if not isinstance(opened, Verified) or opened.message.type != "plan":
        return f"stored plan does not verify: {opened}"
    return opened.message


ON_TIME_S = 0.1
"""Start error allowed: stations play from their own clock (this machine's), so an item
is on time to the millisecond; 0.1 s leaves room for a loaded CI machine."""


def assert_played_on_time(
    server: ServerProcess, broadcast: dict[str, Any], start_at: datetime, wait_s: float = 30
) -> None:
    """What a technician checks: every target played, started on its instant (the
    station's own report), and the station's ``playing`` and ``played`` events are stored."""
    final = {"played", "failed", "interrupted"}
    view = server.api.wait_for_states(broadcast["id"], final, timeout=wait_s)
    for target in view["targets"]:
        assert target["state"] == "played", target
        assert abs((iso(target["started_at"]) - start_at).total_seconds()) < ON_TIME_S, target
        kinds = events_of_item(server.events(target["station_id"]), f"b-{broadcast['id']}")
        assert {"playing", "played"} <= set(kinds), (target["station_id"], sorted(kinds))


def events_of_item(events: Sequence[dict[str, Any]], item_id: str) -> dict[str, dict[str, Any]]:
    """kind → event, for one plan item (the last of each kind)."""
    return {e["kind"]: e for e in events if e.get("item_id") == item_id}


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def soon(seconds: float) -> datetime:
    """A start instant ``seconds`` from now, on a whole second (what an operator types)."""
    at = datetime.now(UTC) + timedelta(seconds=seconds)
    return at.replace(microsecond=0)


STRICT_ENV = "LOAXA_FAULTS_STRICT"
"""Set by ``.ci/run``: CI runs as root, so a fault test that cannot have its namespace
or its tmpfs there is a broken CI machine, not a reason to skip."""


def cannot_run(reason: str) -> None:
    """Skip with ``reason``, or fail under ``LOAXA_FAULTS_STRICT=1`` (CI)."""
    if os.environ.get(STRICT_ENV) == "1":
        pytest.fail(f"{reason} ({STRICT_ENV}=1: CI must run every fault test)", pytrace=False)
    pytest.skip(reason)


class NetnsUnavailable(RuntimeError):
    """This machine cannot make network namespaces (not root, or no CAP_NET_ADMIN)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class StationNetwork:
    """A station's own network namespace, wired to the host by a veth pair.

    The host side carries a ``tbf`` rate limit (a slow 4G uplink; ``netem`` is absent on
    these kernels) and is the switch a test uses to cut the link: ``cut()`` sets it
    down, ``restore()`` up again. The station reaches the host at :attr:`host_ip`.
    """

    index: int = 40
    rate: str = "2mbit"
    name: str = field(init=False)

    def __post_init__(self) -> None:
        suffix = f"{os.getpid() % 10000}x{self.index}"
        self.name = f"lx{suffix}"

    @property
    def host_if(self) -> str:
        return f"{self.name}h"

    @property
    def host_ip(self) -> str:
        return f"10.213.{self.index}.1"

    @property
    def station_ip(self) -> str:
        return f"10.213.{self.index}.2"

    def create(self) -> StationNetwork:
        if os.geteuid() != 0:
            raise NetnsUnavailable("network namespaces need root (CI runs the suite as root)")
        station_if = f"{self.name}s"
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", station_if)
            _ip("link", "set", station_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.name, "addr", "add", f"{self.station_ip}/30", "dev", station_if)
            _ip("-n", self.name, "link", "set", station_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            self.shape(self.rate)
        except NetnsUnavailable:
            self.delete()
            raise
        return self

    def shape(self, rate: str) -> None:
        """Rate-limit what the host sends the station (downloads, messages) to ``rate``."""
        done = subprocess.run(
            ["tc", "qdisc", "replace", "dev", self.host_if, "root", "tbf", "rate", rate,
             "burst", "16kbit", "latency", "2s"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise NetnsUnavailable(f"tc tbf on {self.host_if}: {done.stderr.strip()}")

    def cut(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def delete(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
