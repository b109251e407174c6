"""A real station agent process (``python -m loaxa node``) for fault tests.

The test plays the server: it signs plans with a key the station trusts, publishes
them retained on the station's plan topic, and reads what the station reports. The
agent runs with its real drivers (paho, the disk, the simulated relay board and the
simulated player) and is stopped, killed and restarted like a real one.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from loaxa_protocol import AudioRef, Plan, PlanItem, SigningKey, seal
from node_firmware.config import (
    MqttConfig,
    NodeConfig,
    PlayerConfig,
    RelayConfig,
    TrustedKeyConfig,
)
from node_firmware.drivers.ogg import audio_duration_ms
from tests.unit.test_driver_fetcher import AudioServer


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """``condition()``'s first truthy value, polled until ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


@dataclass
class StationProcess:
    """One station's config on disk and its agent process (started by :meth:`start`)."""

    workdir: Path
    station_id: str
    host: str
    port: int
    plan_key: SigningKey = field(
        default_factory=lambda: SigningKey.generate("plan", frozenset({"plan", "command"}))
    )
    extra: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _seq: int = 0

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def audio_dir(self) -> Path:
        return self.data_dir / "audio"

    @property
    def log_path(self) -> Path:
        return self.workdir / "agent.log"

    def write_config(self) -> Path:
        config = NodeConfig(
            station_id=self.station_id,
            mqtt=MqttConfig(host=self.host, port=self.port, keepalive_s=5),
            trusted_keys=[
                TrustedKeyConfig(
                    kid=self.plan_key.kid,
                    public_key=self.plan_key.public_b64,
                    purposes=sorted(self.plan_key.purposes),
                )
            ],
            data_dir=self.data_dir,
            relay=RelayConfig(driver="sim"),
            player=PlayerConfig(driver="sim"),
            amp_lead_ms=300,
            amp_tail_ms=200,
            heartbeat_s=5,
            **self.extra,
        )
        path = self.workdir / "node.yaml"
        self.workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
        return path

    def start(self) -> StationProcess:
        config = self.write_config()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "loaxa", "node", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def kill(self) -> None:
        """A power cut: SIGKILL, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cache_audio(self, data: bytes, url: str = "http://127.0.0.1:9/never") -> AudioRef:
        """Put ``data`` in the station's cache as if downloaded; its reference for a plan."""
        sha = hashlib.sha256(data).hexdigest()
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        (self.audio_dir / sha).write_bytes(data)
        return AudioRef(
            sha256=sha, size_bytes=len(data), duration_ms=audio_duration_ms(data), url=url
        )

    def plan(self, items: list[PlanItem], keep: list[AudioRef] | None = None) -> bytes:
        """A plan for this station, signed with its trusted key, with a fresh sequence."""
        self._seq += 1
        seq = int(time.time() * 1000) + self._seq
        return signed_plan(self.station_id, self.plan_key, items, keep, seq)


def signed_plan(
    station_id: str,
    key: SigningKey,
    items: list[PlanItem],
    keep: list[AudioRef] | None = None,
    seq: int = 1,
) -> bytes:
    """A plan for ``station_id`` valid for two hours from now, sealed with ``key``."""
    now = datetime.now(UTC)
    plan = Plan(
        sender="server",
        seq=seq,
        issued_at=now,
        expires_at=now + timedelta(hours=2),
        to=station_id,
        station_id=station_id,
        horizon_until=now + timedelta(hours=2),
        items=items,
        keep=keep or [],
    )
    return seal(plan, key)


def station_process(
    workdir: Path, station_id: str, broker: Any, **extra: Any
) -> Iterator[StationProcess]:
    """A fixture body: the station, stopped (or killed) at teardown whatever happened."""
    station = StationProcess(workdir, station_id, broker.host, broker.port, extra=extra)
    try:
        yield station
    finally:
        station.stop()
        print(f"--- agent log {station_id} (tail) ---")
        print(station.log_text()[-4000:])


@contextmanager
def serving_audio() -> Iterator[AudioServer]:
    """A local HTTP server with Range support; put files in ``.files["/name"]``."""
    server = AudioServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
