"""A whole Loaxa installation on one machine: server, broker link and stations.

The demo, the end-to-end tests and the benchmarks all need the same thing — a real
server on a real port, stations registered through the real API and running the real
agent — so they share this one module instead of three hand-rolled set-ups.

On a :class:`~loaxa.broker.ProductionMosquitto` (:meth:`LocalStack.on_broker`) the stack
runs the way a province does: the broker runs the configuration ``loaxa broker config``
generates, the server signs in with the generated server account, every registration is
followed by what an operator does next — re-generate the broker files from the server's
database and reload the broker — and stations connect over TLS with their own accounts,
confined by the ACL to their own topics.

The server starts with a bootstrap administrator (``admin`` and a generated password,
kept in ``<data_dir>/admin-password`` so a restart on the same data signs in again);
the stack signs in once, issues itself an API token and sends it on every request.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from loaxa.broker import ProductionMosquitto, free_port
from node_firmware.agent import NodeAgent
from node_firmware.config import NodeConfig
from server.app import create_app
from server.context import ServerContext
from server.settings import Settings

log = logging.getLogger(__name__)


class ApiError(RuntimeError):
    """The server refused a call the stack made; carries the server's own message."""

    def __init__(self, method: str, path: str, status: int, detail: str) -> None:
        super().__init__(f"{method} {path} → {status}: {detail}")
        self.method = method
        self.path = path
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    """The ``detail`` of an error answer (FastAPI's shape), else its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]


@dataclass
class RunningNode:
    agent: NodeAgent
    thread: threading.Thread

    @property
    def station_id(self) -> str:
        return self.agent.config.station_id

    def run(self) -> None:
        """Run the agent; a ``restart`` command starts a fresh one from the same config."""
        while self.agent.run():
            self.agent = NodeAgent(self.agent.config)

    def stop(self, timeout: float = 5) -> None:
        self.agent.stop()
        self.thread.join(timeout)


@dataclass
class LocalStack:
    """Start with :meth:`start`, add stations, always :meth:`stop` (tests use ``with``)."""

    data_dir: Path
    mqtt_host: str
    mqtt_port: int
    http_port: int = 0
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, RunningNode] = field(default_factory=dict)
    admin_username: str = "admin"
    admin_password: str = ""
    token: str | None = None
    broker: ProductionMosquitto | None = None
    """The production broker the stack admits its stations to (see :meth:`on_broker`)."""
    station_tls: bool = True
    """On a production broker, the node configs the server hands out dial its TLS listener
    with its CA (as in the field); False: its plain loopback listener."""
    _deferred_admission: bool = False
    _app: FastAPI | None = None
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def on_broker(cls, data_dir: Path, broker: ProductionMosquitto, **kwargs: Any) -> LocalStack:
        """A stack linked to a production broker with the generated server account."""
        return cls(data_dir, broker.host, broker.port, broker=broker, **kwargs)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _admin_password(self) -> str:
        """The administrator's password for this data dir: read back, or made and kept."""
        path = self.data_dir / "admin-password"
        if path.is_file():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(password + "\n")
        return password

    def start(self) -> LocalStack:
        self.http_port = self.http_port or free_port()
        self.admin_password = self.admin_password or self._admin_password()
        link: dict[str, Any] = {}
        if self.broker is not None:
            username, password = self.broker.server_credentials
            link = {"mqtt_username": username, "mqtt_password": password}
            if self.station_tls:  # what the node configs handed out at registration say
                link |= {
                    "node_mqtt_port": self.broker.tls_port,
                    "node_mqtt_tls": True,
                    "node_mqtt_ca_file": self.broker.ca_file,
                }
        settings = Settings(
            data_dir=self.data_dir / "server",
            mqtt_host=self.mqtt_host,
            mqtt_port=self.mqtt_port,
            public_url=self.base_url,
            bootstrap_admin_username=self.admin_username,
            bootstrap_admin_password=self.admin_password,
            **{**link, **self.settings_overrides},
        )
        self._app = create_app(settings)
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.http_port,
            log_level="warning",
            proxy_headers=False,  # the app decides whom to believe (trusted_proxies)
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the Loaxa server did not start")
            time.sleep(0.05)
        self.token = self._issue_token()
        if self.broker is not None:
            self.admit_registered()  # stations of an earlier run on the same data
        return self

    def _issue_token(self) -> str:
        """Sign in as the administrator, as a browser would, and issue an API token."""
        with httpx.Client(base_url=self.base_url, timeout=30) as http:
            login = http.post(
                "/api/v1/auth/login",
                json={"username": self.admin_username, "password": self.admin_password},
            )
            login.raise_for_status()
            # The session cookie authenticates this write; the Origin header is its CSRF proof.
            issued = http.post(
                "/api/v1/tokens", json={"name": "local-stack"}, headers={"Origin": self.base_url}
            )
            issued.raise_for_status()
            http.post("/api/v1/auth/logout", headers={"Origin": self.base_url})
        return str(issued.json()["token"])

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for node in list(self.nodes.values()):
            node.stop()
        self.nodes.clear()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    @property
    def context(self) -> ServerContext:
        """The running server's parts, for tests and benchmarks that need to reach in."""
        assert self._app is not None, "start() the stack first"
        context: ServerContext = self._app.state.context
        return context

    def client(self) -> httpx.Client:
        """An HTTP client that acts as the administrator (bearer token)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base_url, timeout=30, headers=headers)

    def api(
        self, method: str, path: str, *, http: httpx.Client | None = None, **kwargs: Any
    ) -> Any:
        """One JSON call, as the administrator unless ``http`` (e.g. :meth:`sign_in`) is given.

        A refusal raises :class:`ApiError` with the server's own message, so a caller can
        show the operator what the server said instead of an HTTP traceback.
        """
        if http is None:
            with self.client() as own:
                response = own.request(method, path, **kwargs)
        else:
            response = http.request(method, path, **kwargs)
        if response.is_error:
            raise ApiError(method, path, response.status_code, _detail(response))
        return response.json() if response.content else None

    def create_user(
        self, username: str, password: str, grants: list[tuple[str, str]], display_name: str = ""
    ) -> dict[str, Any]:
        """Create a user with ``(role, area_code)`` grants through the API, as an admin does."""
        created = self.api(
            "POST",
            "/api/v1/users",
            json={
                "username": username,
                "password": password,
                "display_name": display_name,
                "grants": [{"role": role, "area_code": area} for role, area in grants],
            },
        )
        return dict(created)

    @contextmanager
    def sign_in(self, username: str, password: str) -> Iterator[httpx.Client]:
        """A client signed in as ``username`` the way a browser is: a session cookie, and
        the ``Origin`` header that proves its writes come from this server's pages.
        Signs out when the block ends (``with stack.sign_in(...) as http``)."""
        origin = {"Origin": self.base_url}
        with httpx.Client(base_url=self.base_url, timeout=30, headers=origin) as http:
            self.api(
                "POST",
                "/api/v1/auth/login",
                http=http,
                json={"username": username, "password": password},
            )
            try:
                yield http
            finally:
                http.post("/api/v1/auth/logout")

    # ------------------------------------------------------------ stations

    def register_station(
        self,
        name: str,
        area_code: str,
        latitude: float,
        longitude: float,
        **node_overrides: Any,
    ) -> NodeConfig:
        """Register through the API and return a runnable config for a simulated Pi."""
        with self.client() as http:
            response = http.post(
                "/api/v1/stations",
                json={
                    "name": name,
                    "area_code": area_code,
                    "latitude": latitude,
                    "longitude": longitude,
                },
            )
        response.raise_for_status()
        raw = dict(response.json()["node_config"])
        station_id = raw["station_id"]
        raw["data_dir"] = str(self.data_dir / "nodes" / station_id)
        raw["relay"] = {"driver": "sim"}
        raw["player"] = {"driver": "sim"}
        if self.broker is None:
            raw["mqtt"] = {**raw["mqtt"], "host": self.mqtt_host, "port": self.mqtt_port}
        elif not self._deferred_admission:  # the broker part of the node config is used as is
            self.admit_registered()
        return NodeConfig.model_validate({**raw, **node_overrides})

    def admit_registered(self) -> None:
        """Re-generate the broker's accounts and ACL from the server's database and reload
        it, as an operator does after registering stations (``loaxa broker config`` and
        SIGHUP); :meth:`register_station` calls it unless inside :meth:`registering`."""
        assert self.broker is not None, "admit_registered() needs a production broker"
        self.broker.load_database(self.context.settings.db_url)

    @contextmanager
    def registering(self) -> Iterator[None]:
        """Register many stations with one broker reload at the end instead of one each."""
        self._deferred_admission = True
        try:
            yield
        finally:
            self._deferred_admission = False
        if self.broker is not None:
            self.admit_registered()

    def start_node(self, config: NodeConfig) -> RunningNode:
        node = RunningNode(NodeAgent(config), threading.Thread())
        node.thread = threading.Thread(
            target=node.run, name=f"node-{config.station_id}", daemon=True
        )
        node.thread.start()
        self.nodes[config.station_id] = node
        return node

    # ------------------------------------------------------------ operator actions

    def upload(self, data: bytes, filename: str) -> dict[str, Any]:
        with self.client() as http:
            response = http.post("/api/v1/audio", files={"file": (filename, data)})
        response.raise_for_status()
        return dict(response.json())

    def broadcast(
        self, audio_id: int, start_at: datetime, station_ids: list[str], priority: str = "normal"
    ) -> dict[str, Any]:
        with self.client() as http:
            response = http.post(
                "/api/v1/broadcasts",
                json={
                    "audio_id": audio_id,
                    "start_at": start_at.isoformat(),
                    "station_ids": station_ids,
                    "priority": priority,
                    "title": "Bản tin",
                },
            )
        response.raise_for_status()
        return dict(response.json())

    def broadcast_state(self, broadcast_id: int) -> dict[str, Any]:
        with self.client() as http:
            response = http.get(f"/api/v1/broadcasts/{broadcast_id}")
        response.raise_for_status()
        return dict(response.json())

    def wait_for_states(
        self, broadcast_id: int, states: set[str], timeout: float
    ) -> dict[str, Any]:
        """Poll until every target is in one of ``states``; return the last view."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.broadcast_state(broadcast_id)
            if all(t["state"] in states for t in view["targets"]):
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(f"broadcast {broadcast_id} still at {view['targets']}")
            time.sleep(0.2)
