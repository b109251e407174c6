"""Health probes: the numbers a technician needs to find a dying station early.

Keys match ``loaxa_protocol.messages.Health``. A probe that cannot read its source
reports ``None`` rather than failing the heartbeat: a missing thermal zone must not
silence the disk and uptime figures.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import psutil

from node_firmware.drivers.audio_cache import AudioCache

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
# Zone types that mean "the SoC/CPU" on a Raspberry Pi, other ARM boards and x86.
_CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "soc_thermal", "x86_pkg_temp")


def basic_health(cache: AudioCache, thermal_root: Path = THERMAL_ROOT) -> dict[str, Any]:
    """``uptime_s``, ``disk_free_bytes`` (of the audio cache) and ``cpu_temp_c``."""
    try:
        disk_free: int | None = cache.free_disk_bytes()
    except OSError as exc:
        log.warning("cannot measure free disk space: %s", exc)
        disk_free = None
    return {
        "uptime_s": system_uptime_s(),
        "disk_free_bytes": disk_free,
        "cpu_temp_c": cpu_temp_c(thermal_root),
    }


def system_uptime_s() -> float:
    """Seconds since boot, so a power cut shows as a reset, not as agent churn.

    ``CLOCK_BOOTTIME`` does not jump when NTP corrects the wall clock, which a Pi
    without an RTC does right after every boot; psutil's boot time is wall-clock based.
    """
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return max(0.0, time.time() - float(psutil.boot_time()))


def cpu_temp_c(thermal_root: Path = THERMAL_ROOT) -> float | None:
    """The CPU zone's temperature, else the first readable zone's, else ``None``."""
    readings: list[tuple[str, float]] = []
    for zone in sorted(thermal_root.glob("thermal_zone*")):
        try:
            kind = (zone / "type").read_text().strip()
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        readings.append((kind, millidegrees / 1000))
    for kind, celsius in readings:
        if kind in _CPU_ZONE_TYPES:
            return celsius
    return readings[0][1] if readings else None
