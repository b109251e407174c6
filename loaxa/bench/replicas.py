"""Several real ``loaxa serve`` processes on one PostgreSQL, for ``loaxa bench alert --replicas``.

Each replica is its own process, as in production (docs/architecture.md, "Several
server processes"): the same database and data dir, its own HTTP port and broker client
id. The bench reaches them only as an operator would (HTTP) plus the database, so it can
kill one with SIGKILL and watch the others carry on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from loaxa.broker import free_port
from server.db import make_engine

READY_TIMEOUT_S = 90.0
DEFAULT_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_postgres(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database next to ``admin_url``'s, dropped afterwards."""
    name = f"loaxa_bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class Replica:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class ReplicaSet:
    """Start ``count`` replicas one after the other; :meth:`stop` ends those still running."""

    def __init__(
        self,
        count: int,
        data_dir: Path,
        database_url: str,
        env: dict[str, str],
        admin: tuple[str, str],
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.replicas: list[Replica] = []
        self.token = ""
        self._count = count
        self._env = {
            **os.environ,
            **env,
            "LOAXA_DATABASE_URL": database_url,
            "LOAXA_DATA_DIR": str(data_dir),
            "LOAXA_BOOTSTRAP_ADMIN_USERNAME": admin[0],
            "LOAXA_BOOTSTRAP_ADMIN_PASSWORD": admin[1],
        }
        self._admin = admin

    def start(self) -> ReplicaSet:
        logs = self.data_dir.parent / "replica-logs"
        logs.mkdir(parents=True, exist_ok=True)
        for number in range(self._count):
            name = chr(ord("a") + number)
            port = free_port()
            env = {
                **self._env,
                "LOAXA_MQTT_CLIENT_ID": f"loaxa-server-{name}",  # one id per replica
                "LOAXA_PUBLIC_URL": f"http://127.0.0.1:{port}",
            }
            command = [sys.executable, "-m", "loaxa", "serve", "--port", str(port)]
            with (logs / f"{name}.log").open("wb") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            replica = Replica(name, f"http://127.0.0.1:{port}", process)
            self.replicas.append(replica)
            self._wait_ready(replica)
        self.token = self._issue_token(self.replicas[0])
        return self

    def stop(self) -> None:
        for replica in self.replicas:
            if replica.alive:
                replica.process.terminate()
        for replica in self.replicas:
            try:
                replica.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.process.kill()

    def __enter__(self) -> ReplicaSet:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @staticmethod
    def _wait_ready(replica: Replica) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not replica.alive:
                raise RuntimeError(f"replica {replica.name} exited ({replica.process.returncode})")
            try:
                if httpx.get(f"{replica.base_url}/login", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"replica {replica.name} did not answer within {READY_TIMEOUT_S} s")

    def _issue_token(self, replica: Replica) -> str:
        """One API token (in the shared database, so every replica honours it)."""
        username, password = self._admin
        origin = {"Origin": replica.base_url}
        with httpx.Client(base_url=replica.base_url, headers=origin, timeout=30) as http:
            login = http.post(
                "/api/v1/auth/login", json={"username": username, "password": password}
            )
            login.raise_for_status()
            issued = http.post("/api/v1/tokens", json={"name": "bench-replicas"})
            issued.raise_for_status()
        return str(issued.json()["token"])

    def client(self, replica: Replica, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=replica.base_url, timeout=30, headers=headers)

    def alive(self) -> list[Replica]:
        return [r for r in self.replicas if r.alive]

    def cluster(self, replica: Replica) -> dict[str, Any]:
        with self.client(replica) as http:
            return dict(http.get("/api/v1/system").json()["cluster"])

    def leader(self) -> Replica | None:
        for replica in self.alive():
            try:
                if self.cluster(replica)["leader"]:
                    return replica
            except httpx.HTTPError:
                continue
        return None

    @staticmethod
    def kill(replica: Replica) -> None:
        """SIGKILL: no clean shutdown, no lock given back but by PostgreSQL itself."""
        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait(timeout=10)
