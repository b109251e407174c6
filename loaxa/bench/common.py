"""What ``loaxa bench health`` and ``loaxa bench alert`` share: the secured broker and server.

Both run everything on this machine: a private Mosquitto with the production security
model — no anonymous access, a password file with each station's ``$7$`` hash as the
server stored it, and the generated ACL (:mod:`loaxa.broker_config`) — so the broker pays
the same per-publish ACL checks it pays in the field, and the real server
(:class:`~loaxa.stack.LocalStack`) linked to it with its own broker account. The broker
starts with only the server's account; once the stations are registered, the files are
rewritten from the server's database and Mosquitto reloads them on SIGHUP, as an operator
would after ``loaxa broker config``.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from loaxa.bench.swarm import SwarmStation
from loaxa.bench.swarm_transport import SwarmReady
from loaxa.broker import MosquittoBroker, mqtt_ping
from loaxa.broker_config import (
    INGEST_USERNAME,
    SERVER_USERNAME,
    ServerCredentials,
    StationAccount,
    acl_text,
    load_station_accounts,
    passwd_text,
)
from loaxa.stack import LocalStack
from server.passwords import hash_password

RELOAD_TIMEOUT_S = 10.0
BULK_CHUNK = 1000
"""Stations per ``POST /api/v1/stations/bulk`` (the server takes up to 5,000)."""
BULK_TIMEOUT_S = 120.0
LINK_TIMEOUT_S = 15.0


class SecuredBroker:
    """A private Mosquitto that authenticates every client and applies the generated ACL.

    It starts open to anonymous clients (with no topic rights: the ACL grants none), only
    because the broker helper proves readiness with an anonymous CONNECT; :meth:`grant`
    then closes anonymous access together with loading the station accounts.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        self.server = ServerCredentials(SERVER_USERNAME, password, hash_password(password))
        password = secrets.token_urlsafe(24)
        self.ingest = ServerCredentials(INGEST_USERNAME, password, hash_password(password))
        """the ingest workers' account (``loaxa worker ingest``), as the generated config has"""
        self._write([])
        self.broker = MosquittoBroker(
            workdir=workdir,
            extra_config="\n".join(
                [
                    f"password_file {workdir / 'passwd'}",
                    f"acl_file {workdir / 'acl'}",
                    # As the generated production config (loaxa/broker_config.py).
                    "max_queued_messages 100000",
                    # Its drop counter every second, not every ten: a run's last drops
                    # reach the server before the run's counters are read.
                    "sys_interval 1",
                ]
            ),
        )

    def _write(self, accounts: list[StationAccount]) -> None:
        (self.workdir / "passwd").write_text(passwd_text(accounts, self.server, self.ingest))
        acl = acl_text(accounts, self.server.username, self.ingest.username)
        (self.workdir / "acl").write_text(acl)

    def grant(self, accounts: list[StationAccount]) -> None:
        """Load the accounts and refuse anonymous clients, as production does (SIGHUP reload).

        Returns once an anonymous CONNECT is refused, which proves the reload happened.
        """
        self._write(accounts)
        with self.broker.config_path.open("a") as config:
            config.write("allow_anonymous false\n")  # later lines win over the helper's
        pid = self.broker.pid
        if pid is None:
            raise RuntimeError("the bench broker is not running")
        os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + RELOAD_TIMEOUT_S
        while mqtt_ping(self.broker.host, self.broker.port):
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not reload its password file and ACL")
            time.sleep(0.05)

    def grant_registered(self, stack: LocalStack) -> None:
        """:meth:`grant` every station the server has registered (its database's accounts)."""
        self.grant(load_station_accounts(stack.context.settings.db_url))


def wait_link(stack: LocalStack, timeout_s: float = LINK_TIMEOUT_S) -> None:
    """Until the server reports its MQTT link to the bench broker up."""
    deadline = time.monotonic() + timeout_s
    with stack.client() as http:
        while not http.get("/api/v1/system").json()["mqtt"]["connected"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not connect to the bench broker")
            time.sleep(0.05)


@contextmanager
def secured_stack(
    prefix: str, settings_overrides: dict[str, Any] | None = None
) -> Iterator[tuple[SecuredBroker, LocalStack]]:
    """A :class:`SecuredBroker` and the real server linked to it, in a temporary directory.

    The server is started, linked to the broker with its own account and stopped on
    the way out (stopping it earlier is allowed).
    """
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        secured = SecuredBroker(Path(tmp) / "mosquitto")
        with secured.broker as broker:
            stack = LocalStack(
                Path(tmp) / "stack",
                broker.host,
                broker.port,
                settings_overrides={
                    "mqtt_username": secured.server.username,
                    "mqtt_password": secured.server.password,
                    **(settings_overrides or {}),
                },
            )
            try:
                stack.start()
                wait_link(stack)
                yield secured, stack
            finally:
                stack.stop()


def register_bulk(stack: LocalStack, entries: list[dict[str, Any]]) -> list[SwarmStation]:
    """Register stations (``StationCreate`` bodies with ids) in bulk; their broker accounts."""
    stations = []
    with stack.client() as http:
        for start in range(0, len(entries), BULK_CHUNK):
            chunk = entries[start : start + BULK_CHUNK]
            response = http.post(
                "/api/v1/stations/bulk", json={"stations": chunk}, timeout=BULK_TIMEOUT_S
            )
            response.raise_for_status()
            stations += [
                SwarmStation(one["station"]["id"], one["mqtt"]["username"], one["mqtt"]["password"])
                for one in response.json()
            ]
    return stations


def require_connected(ready: SwarmReady, nodes: int, log: logging.Logger) -> None:
    """Refuse to measure unless every one of the ``nodes`` stations connected."""
    if ready.refused or ready.connected != nodes:
        raise RuntimeError(
            f"only {ready.connected} of {nodes} stations connected; refused: {ready.refused[:3]}"
        )
    log.info("%s stations connected in %.1f s", nodes, ready.seconds)
