"""Two real `loaxa serve` processes on one PostgreSQL, one production Mosquitto, one station.

What several replicas must share (issue 17), checked end to end with real parts:

- plans published by either replica are all accepted by the station: the signing
  sequence comes from the database, so no number is reused and none goes back;
- exactly one replica leads (runs the planner's roll); killing it with SIGKILL moves the
  lead and the roll to the other within seconds;
- failed sign-ins counted by one replica throttle the same account on the other, and
  claim codes it refused throttle the same address on the other;
- a plan key rotated through one replica is the other's too, without a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from loaxa.broker import ProductionMosquitto, free_port
from loaxa.stack import LocalStack
from loaxa_protocol.enrolment import new_station_key, public_key_text
from server.db import make_engine
from tests.audio_samples import make_audio
from tests.database import ADMIN_PG, postgres_available, postgres_database

ADMIN = "admin"
PASSWORD = "replicas-Admin-2026!"
TAKEOVER_S = 5.0
"""How long the other replica may take to lead after a SIGKILL (leader_check_s is 0.5)."""


pytestmark = pytest.mark.skipif(not postgres_available(), reason="needs a PostgreSQL server")


@dataclass
class Replica:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    token: str = ""

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )

    def system(self) -> dict[str, Any]:
        with self.client() as http:
            response = http.get("/api/v1/system")
        response.raise_for_status()
        return dict(response.json()["cluster"])


def _start(name: str, env: dict[str, str], log: Path) -> Replica:
    port = free_port()
    # Each replica its own broker client id (one id would make them kick each other off).
    env = {**env, "LOAXA_MQTT_CLIENT_ID": f"loaxa-{name}"}
    env["LOAXA_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "loaxa", "serve", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    return Replica(name, f"http://127.0.0.1:{port}", process)


def _wait_ready(replica: Replica) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise RuntimeError(f"{replica.name} exited with {replica.process.returncode}")
        try:
            if httpx.get(f"{replica.base_url}/login", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError(f"{replica.name} did not answer within 60 s")
    origin = {"Origin": replica.base_url}
    with httpx.Client(base_url=replica.base_url, headers=origin, timeout=30) as http:
        login = http.post("/api/v1/auth/login", json={"username": ADMIN, "password": PASSWORD})
        login.raise_for_status()
        issued = http.post("/api/v1/tokens", json={"name": f"test-{replica.name}"})
        issued.raise_for_status()
    replica.token = issued.json()["token"]


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds until ``check`` held; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"not within {timeout_s} s: {what}")
        time.sleep(0.1)
    return time.monotonic() - started


@pytest.fixture
def replicas(
    tmp_path: Path, production_mosquitto: ProductionMosquitto
) -> Iterator[tuple[str, list[Replica]]]:
    broker = production_mosquitto
    username, password = broker.server_credentials
    with postgres_database(ADMIN_PG, "loaxa_replicas") as url:
        env = {
            **os.environ,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "LOAXA_DATABASE_URL": url,
            "LOAXA_DATA_DIR": str(tmp_path / "shared"),  # keys and audio: the shared volume
            "LOAXA_MQTT_HOST": broker.host,
            "LOAXA_MQTT_PORT": str(broker.port),
            "LOAXA_MQTT_USERNAME": username,
            "LOAXA_MQTT_PASSWORD": password,
            "LOAXA_NODE_MQTT_PORT": str(broker.tls_port),
            "LOAXA_NODE_MQTT_TLS": "true",
            "LOAXA_NODE_MQTT_CA_FILE": str(broker.ca_file),
            "LOAXA_PLAN_REFRESH_MIN": "0.05",  # a roll every 3 s
            "LOAXA_LEADER_CHECK_S": "0.5",
            "LOAXA_BOOTSTRAP_ADMIN_USERNAME": ADMIN,
            "LOAXA_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
        }
        started = [_start(n, env, tmp_path / f"{n}.log") for n in ("a", "b")]
        try:
            for replica in started:
                _wait_ready(replica)
            yield url, started
        finally:
            for replica in started:
                if replica.process.poll() is None:
                    replica.process.terminate()
            for replica in started:
                replica.process.wait(timeout=30)
            for replica in started:
                print(f"--- {replica.name}.log (tail)")
                print((tmp_path / f"{replica.name}.log").read_text()[-3000:])


def _plan_events(url: str, station_id: str) -> tuple[set[int], list[str]]:
    """Sequences the station accepted, and its refusals, as it reported them."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT kind, plan_seq, reason, detail FROM stationevent WHERE station_id = :s"
                ),
                {"s": station_id},
            ).all()
    finally:
        engine.dispose()
    accepted = {int(seq) for kind, seq, _, _ in rows if kind == "plan_accepted" and seq}
    refused = [f"{reason}: {detail}" for kind, _, reason, detail in rows if kind == "rejected"]
    return accepted, refused


def _broadcast_accepted(
    replica: Replica, audio_id: int, station_id: str, start_at: datetime, title: str
) -> None:
    """A broadcast through ``replica``; returns once the station has accepted its plan."""
    with replica.client() as http:
        created = http.post(
            "/api/v1/broadcasts",
            json={
                "audio_id": audio_id,
                "start_at": start_at.isoformat(),
                "station_ids": [station_id],
                "title": title,
            },
        )
    assert created.status_code == 201, created.text
    broadcast_id = created.json()["id"]

    def delivered() -> bool:
        with replica.client() as http:
            detail = http.get(f"/api/v1/broadcasts/{broadcast_id}").json()
        return detail["targets"][0]["delivered_at"] is not None

    _until(delivered, 15, f"{title!r} via {replica.name} accepted")


def _intrusions(url: str) -> list[str]:
    """What the replicas' intrusion watches recorded: none, when only they publish."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT reason, detail FROM stationevent WHERE kind = 'intrusion'")
            ).all()
    finally:
        engine.dispose()
    return [f"{reason}: {detail}" for reason, detail in rows]


def test_two_replicas_share_sequence_leader_throttles_and_keys(
    tmp_path: Path,
    production_mosquitto: ProductionMosquitto,
    replicas: tuple[str, list[Replica]],
) -> None:
    url, (a, b) = replicas
    # Exactly one leader.
    _until(lambda: [a.system()["leader"], b.system()["leader"]].count(True) == 1, 10, "a leader")

    # One station, registered through replica a, admitted to the production broker and
    # dialling its TLS listener (the stack only runs the station here, not a server).
    broker = production_mosquitto
    stack = LocalStack(tmp_path / "station", broker.host, broker.tls_port)
    stack.http_port = int(a.base_url.rsplit(":", 1)[1])
    stack.token = a.token
    config = stack.register_station("Loa chợ", "01273", 22.67, 106.25)
    broker.load_database(url)
    station_id = config.station_id
    stack.start_node(config)
    try:
        with a.client() as http:
            audio = http.post(
                "/api/v1/audio", files={"file": ("tin.wav", make_audio("wav", seconds=1.0))}
            )
            audio.raise_for_status()
        audio_id = audio.json()["id"]
        start = datetime.now(UTC) + timedelta(hours=2)

        # Broadcasts through both replicas, alternately: each publishes a plan.
        for number, replica in enumerate([a, b, a, b]):
            at = start + timedelta(minutes=number)
            _broadcast_accepted(replica, audio_id, station_id, at, f"Bản tin {number}")

        accepted, refused = _plan_events(url, station_id)
        assert refused == []
        assert len(accepted) >= 4

        # Login throttling is shared: failures on a lock the account on b.
        for _ in range(5):
            with httpx.Client(base_url=a.base_url) as http:
                wrong = {"username": ADMIN, "password": "not-the-password"}
                assert http.post("/api/v1/auth/login", json=wrong).status_code == 401
        with httpx.Client(base_url=b.base_url) as http:
            right = {"username": ADMIN, "password": PASSWORD}
            throttled = http.post("/api/v1/auth/login", json=right)
        assert throttled.status_code == 429, throttled.text

        # So is the enrolment limiter: claim codes refused by a block the address on b.
        key = public_key_text(new_station_key())
        guess = {"claim_code": "ZZZZ-ZZZZ-ZZZZ-ZZZZ", "public_key": key, "hostname": "loa-x"}
        guesser = httpx.HTTPTransport(local_address="127.0.0.7")
        with httpx.Client(base_url=a.base_url, transport=guesser) as http:
            for _ in range(5):
                refused = http.post("/api/v1/enrolment/requests", json=guess)
                assert refused.status_code == 403, refused.text
        with httpx.Client(base_url=b.base_url, transport=guesser) as http:
            limited = http.post("/api/v1/enrolment/requests", json=guess)
        assert limited.status_code == 429, limited.text

        # A key rotated through a reaches b without a restart: b signs with the new key,
        # the station accepts b's plan, and b's intrusion watch takes a's new-key plans
        # (echoed to it) for its own, not for forgeries.
        with a.client() as http:
            rotated = http.post("/api/v1/keys/rotate", json={"grace_hours": 1})
        assert rotated.status_code == 200, rotated.text
        new_kid = rotated.json()["new_kid"]

        def b_signs_with_new_key() -> bool:
            with b.client() as http:
                return bool(http.get("/api/v1/keys").json()["signing_kid"] == new_kid)

        took = _until(b_signs_with_new_key, 5, "b reads the rotated key")
        print(f"b signs with the rotated key after {took:.2f} s")
        _broadcast_accepted(b, audio_id, station_id, start + timedelta(minutes=20), "Đổi khoá")
        assert _plan_events(url, station_id)[1] == []
        assert _intrusions(url) == []

        # Kill the leader: the other takes the lead and the roll within seconds.
        leader, other = (a, b) if a.system()["leader"] else (b, a)
        rolls_before = other.system()["planner_rolls"]
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(timeout=10)
        took = _until(lambda: other.system()["leader"] is True, TAKEOVER_S, "takeover")
        _until(
            lambda: other.system()["planner_rolls"] > rolls_before, 10, "a roll on the new leader"
        )
        print(f"takeover after {took:.2f} s")

        # The survivor's plans are still accepted after the leader died mid-life.
        at = start + timedelta(minutes=30)
        _broadcast_accepted(other, audio_id, station_id, at, "Sau khi máy chủ chết")
        accepted, refused = _plan_events(url, station_id)
        assert refused == []
        # The other replica's plans, signed by the shared key, are not intrusions.
        with other.client() as http:
            assert http.get("/api/v1/system").json()["intrusions"] == 0
    finally:
        stack.stop()
