"""A station on a small, filling data disk (issue 11, §3.3): a real agent on a real tmpfs.

The free-space reserve is relative to the disk, so a 31 KB bulletin fits on a 2 MB
disk (a fixed 64 MiB reserve refused it); a canned-library file that cannot fit is
reported as ``library_failed`` (``disk_full``) instead of silently missing, and the
agent stays up and plays its programme.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol import AudioRef, PlanItem, topics
from node_firmware.drivers.ogg import audio_duration_ms
from tests.audio_samples import make_audio
from tests.node_process import StationProcess, serving_audio, station_process
from tests.unit.test_driver_fetcher import AudioServer

STATION = "st-small-disk"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MB tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def audio_server() -> Iterator[AudioServer]:
    with serving_audio() as server:
        yield server


@pytest.fixture
def station(small_disk: Path, tmp_path: Path, mosquitto) -> Iterator[StationProcess]:
    for station in station_process(tmp_path / "station", STATION, mosquitto):
        station.workdir.mkdir(parents=True, exist_ok=True)
        (station.workdir / "data").symlink_to(small_disk)
        yield station


def served(server: AudioServer, name: str, data: bytes, duration_ms: int) -> AudioRef:
    server.files[f"/{name}"] = data
    return AudioRef(
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        duration_ms=duration_ms,
        url=server.url(f"/{name}"),
    )


def test_a_small_disk_takes_a_small_bulletin_and_reports_the_library_it_cannot_hold(
    station: StationProcess, audio_server: AudioServer, mosquitto, mqtt_probe
) -> None:
    bulletin = make_audio("ogg", 6.0)
    assert 10_000 < len(bulletin) < 100_000
    bulletin_ref = served(audio_server, "b.ogg", bulletin, audio_duration_ms(bulletin))
    siren = served(audio_server, "siren.ogg", os.urandom(3 * 1024**2), 60_000)
    probe = mqtt_probe(mosquitto, topics=[topics.event(STATION)])
    station.start()
    start = datetime.now(UTC) + timedelta(seconds=8)
    item = PlanItem(item_id="b-small", start_at=start, audio=bulletin_ref)
    probe.publish(topics.plan(STATION), station.plan([item], keep=[siren]), retain=True)

    def event(kind: str, timeout: float = 20) -> dict:
        return probe.wait_for(lambda m: m.json()["kind"] == kind, timeout).json()

    assert event("audio_fetched")["item_id"] == "b-small"
    library = event("library_failed")
    assert library["reason"] == "disk_full"
    assert library["detail"].startswith(siren.sha256) and "disk full" in library["detail"]
    played = event("played", timeout=30)
    assert played["item_id"] == "b-small"
    assert station.process is not None and station.process.poll() is None  # still up
    assert (station.data_dir / "audio" / bulletin_ref.sha256).read_bytes() == bulletin
