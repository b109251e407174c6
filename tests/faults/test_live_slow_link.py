"""Live over a bad network: a station behind a 256 kbit/s link (its own network namespace,
``tbf`` on the host side) still plays a live session whole; every process is real."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loaxa.bench.live import FRAME_MS, LiveSender
from node_firmware.drivers.audio_cache import AudioCache
from tests.faults.conftest import Installation
from tests.faults.harness import StationNetwork, wait_until

RATE = "256kbit"
LIBRARY = Path(__file__).resolve().parents[2] / "audio" / "library.json"
SUMMARY = re.compile(
    r"live output (?P<sid>[0-9a-f]{16}): played (?P<played>\d+) frames, concealed "
    r"(?P<concealed>\d+), gaps (?P<gaps>\d+), capture to output p50 (?P<p50>\d+) ms "
    r"p95 (?P<p95>\d+) ms"
)


@pytest.mark.network(index=46, rate=RATE)
def test_a_station_behind_256_kbit_plays_a_live_session_without_a_gap(
    namespaced_installation: Installation, network: StationNetwork
) -> None:
    server = namespaced_installation.server
    station = namespaced_installation.add_namespaced_station("Cụm loa vùng sâu", network)
    sid = station.station_id
    wait_until(lambda: server.station(sid)["status"] == "online", 40, "the station online")
    # A fresh station first fetches the canned alert library (175 kB: 6 s of this link);
    # live then shares the link with nothing else, as on the air.
    cache = AudioCache(Path(station.config.data_dir) / "audio", station.config.cache_max_bytes)
    library = len(json.loads(LIBRARY.read_text()))
    wait_until(lambda: len(cache.hashes()) > library, 60, "the station's alert library")
    created = server.api.api(
        "POST", "/api/v1/live/sessions", json={"targets": {"stations": [sid]}, "title": "4G"}
    )
    seconds = 8.0
    sent = LiveSender(f"http://127.0.0.1:{server.port}", created["id"], created["token"]).run(
        seconds
    )
    found = wait_until(
        lambda: SUMMARY.search(station.log_text()), 20, "the station's live output summary"
    )
    assert found["sid"] == created["id"]
    warmup_frames = created["warmup_ms"] // FRAME_MS
    played = int(found["played"])
    print(f"256 kbit/s: sent {sent.frames}, {found.group(0)}")
    assert played >= sent.frames - warmup_frames - 5
    assert int(found["gaps"]) == 0 and int(found["concealed"]) == 0
    assert int(found["p95"]) <= 1500
    events = wait_until(
        lambda: [e for e in server.events(sid) if e["kind"] == "live_ended"], 20, "as-run"
    )
    assert events[0]["reason"] == "stopped"
