"""Health probes read the real system, and a thermal tree we lay out on disk."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from loaxa_protocol import Health
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.probes import basic_health, cpu_temp_c


def zone(root: Path, index: int, kind: str, millidegrees: str) -> None:
    folder = root / f"thermal_zone{index}"
    folder.mkdir(parents=True)
    (folder / "type").write_text(f"{kind}\n")
    (folder / "temp").write_text(f"{millidegrees}\n")


def test_basic_health_fills_health_fields(tmp_path: Path) -> None:
    cache = AudioCache(tmp_path / "audio", max_bytes=1000)
    thermal = tmp_path / "thermal"
    zone(thermal, 0, "cpu-thermal", "48312")

    probes = basic_health(cache, thermal_root=thermal)

    assert probes["uptime_s"] > 0 and probes["disk_free_bytes"] > 0
    assert probes["cpu_temp_c"] == 48.312
    health = Health(
        station_id="cb-001", at=datetime.now(UTC), agent_version="t", amp_on=False,
        relay_ok=True, **probes,
    )  # fmt: skip
    assert health.cpu_temp_c == 48.312


def test_cpu_zone_is_preferred_and_missing_sensors_are_none(tmp_path: Path) -> None:
    zone(tmp_path, 0, "acpitz", "30000")
    zone(tmp_path, 1, "x86_pkg_temp", "55000")
    zone(tmp_path, 2, "broken", "n/a")
    assert cpu_temp_c(tmp_path) == 55.0
    assert cpu_temp_c(tmp_path / "no-such-dir") is None
