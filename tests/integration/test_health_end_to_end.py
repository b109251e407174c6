"""A real station's probes reach the technician: modem signal, amplifier current, alarms.

Real Mosquitto, the real server and the real agent with a simulated line-protocol relay
board (which reports amplifier current) and a simulated 4G modem, both on pseudo-terminals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loaxa.stack import LocalStack
from tests.audio_samples import make_audio
from tests.brokers import ProductionMosquitto


@pytest.fixture
def stack(tmp_path: Path, production_mosquitto: ProductionMosquitto) -> Iterator[LocalStack]:
    with LocalStack.on_broker(tmp_path, production_mosquitto) as running:
        yield running


def wait_for(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_amplifier_drawing_no_current_while_playing_raises_an_alarm(stack: LocalStack) -> None:
    config = stack.register_station(
        "Cụm loa", "01273", 22.66, 106.25,
        relay={"driver": "sim-line"}, modem={"driver": "sim"}, heartbeat_s=2,
    )  # fmt: skip
    node = stack.start_node(config)
    station_id = node.station_id

    def station() -> dict[str, Any]:
        with stack.client() as http:
            return dict(http.get(f"/api/v1/stations/{station_id}").json())

    health = wait_for(lambda: station()["last_health"], 15, "a first heartbeat")
    assert health["modem_operator"] == "Viettel" and health["modem_rssi_dbm"] == -77

    audio = stack.upload(make_audio("mp3", 8.0), "dai.mp3")
    stack.broadcast(audio["id"], datetime.now(UTC) + timedelta(seconds=3), [station_id])
    wait_for(lambda: node.agent.core.current is not None, 15, "the bulletin to start")
    node.agent.board.fail_current()  # the amplifier's fuse blows mid-bulletin

    def amp_alarms() -> list[dict[str, Any]]:
        with stack.client() as http:
            alarms = http.get("/api/v1/alarms", params={"station_id": station_id}).json()
        return [a for a in alarms if "amp" in a["kind"]]

    (alarm,) = wait_for(amp_alarms, 20, "an amplifier alarm")
    assert alarm["state"] == "open"
    with stack.client() as http:
        events = http.get(f"/api/v1/stations/{station_id}/events").json()
    assert any(e["kind"] == "amp_fault" for e in events)
