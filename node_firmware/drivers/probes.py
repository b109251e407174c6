"""Health probes: the numbers a technician needs to find a dying station early.

Keys match ``loaxa_protocol.messages.Health``. A probe that cannot read its source
reports ``None`` rather than failing the heartbeat: a missing thermal zone must not
silence the disk and uptime figures. A failing probe warns once, not every minute,
until it recovers.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from loaxa_protocol.errors import RelayError
from node_firmware.drivers.audio_cache import AudioCache
from node_firmware.drivers.clock_probe import ntp_synchronised
from node_firmware.drivers.relay import Relay, StatusValue

log = logging.getLogger(__name__)

THERMAL_ROOT = Path("/sys/class/thermal")
MEMINFO = Path("/proc/meminfo")
# Zone types that mean "the SoC/CPU" on a Raspberry Pi, other ARM boards and x86.
_CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "soc_thermal", "x86_pkg_temp")

T = TypeVar("T")
_failing: set[str] = set()
"""Probes that have failed since they last worked: they have warned already."""


@runtime_checkable
class ReportingRelay(Protocol):
    """A relay board that can also read back the amplifier (``LineRelay``)."""

    def status(self) -> dict[str, StatusValue]: ...


def system_health(cache: AudioCache, thermal_root: Path = THERMAL_ROOT) -> dict[str, object]:
    """The station's own vital signs, keyed by ``Health`` field; ``None`` where unknown."""
    disk = _guarded("disk", lambda: shutil.disk_usage(cache.root))
    load = _guarded("load_1m", os.getloadavg)
    return {
        "uptime_s": _guarded("uptime_s", system_uptime_s),
        "disk_free_bytes": disk.free if disk else None,
        "disk_total_bytes": disk.total if disk else None,
        "cpu_temp_c": _guarded("cpu_temp_c", lambda: cpu_temp_c(thermal_root)),
        "load_1m": load[0] if load else None,
        "mem_used_pct": _guarded("mem_used_pct", mem_used_pct),
        "ntp_synced": _guarded("ntp_synced", ntp_synchronised),
    }


def amp_readback(relay: Relay) -> dict[str, object] | None:
    """Amplifier state, current and temperature from a board that reports them.

    ``None`` for boards that cannot report and when the read fails: a failing board
    is already reported through the relay fault path, and a guessed 0 mA would
    raise a false "amplifier drawing no current" alarm.
    """
    if not isinstance(relay, ReportingRelay):
        return None

    def read() -> dict[str, object] | None:
        try:
            status = relay.status()
        except RelayError as exc:
            log.debug("no amplifier readback: %s", exc)
            return None
        return _amp_fields(status)

    return _guarded("amp_readback", read)


def system_uptime_s() -> float:
    """Seconds since boot, so a power cut shows as a reset, not as agent churn.

    ``CLOCK_BOOTTIME`` does not jump when NTP corrects the wall clock, which a Pi
    without an RTC does right after every boot (Linux only, as stations are).
    """
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def mem_used_pct(meminfo: Path = MEMINFO) -> float:
    """Memory in use, as ``free`` and psutil count it: (MemTotal - MemAvailable) / MemTotal.

    Read from ``/proc`` rather than through psutil, which would cost the idle agent a
    native library and over a MiB of RSS for this one figure.
    """
    fields: dict[str, int] = {}
    for line in meminfo.read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if value.split():
            fields[name] = int(value.split()[0])
    total = fields["MemTotal"]
    return round((total - fields["MemAvailable"]) / total * 100, 1)


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


def _guarded(name: str, probe: Callable[[], T]) -> T | None:
    """Run one probe; whatever it raises becomes ``None`` and one warning."""
    try:
        value = probe()
    except Exception as exc:  # any probe bug must not cost the whole heartbeat
        if name not in _failing:
            _failing.add(name)
            log.warning("health probe %s failed, reporting None until it works: %s", name, exc)
        return None
    if name in _failing:
        _failing.discard(name)
        log.info("health probe %s works again", name)
    return value


def _amp_fields(status: dict[str, StatusValue]) -> dict[str, object]:
    amp, current_ma = status.get("amp"), _number(status.get("current_ma"))
    if not isinstance(amp, bool) or current_ma is None:
        raise ValueError(f"relay board status lacks amp=on|off or current_ma: {status}")
    return {
        "amp_on": amp,
        "amp_current_ma": current_ma,
        "amp_temp_c": _number(status.get("temp_c")),
    }


def _number(value: StatusValue | None) -> float | None:
    """Status values are typed by the board's text; ``on``/``off`` are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
