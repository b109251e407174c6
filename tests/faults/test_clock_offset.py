"""A station whose clock is 30 s off: the server measures it and raises the alarm;
once the clock is right again the alarm clears by itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import Installation, running_installation
from tests.faults.harness import wait_until

OFFSET_S = 30.0


@pytest.fixture
def installation(tmp_path: Path) -> Iterator[Installation]:
    # Measure every 6 s and evaluate alarms every 2 s instead of every 10 min / 30 s.
    overrides = {"LOAXA_CLOCK_SYNC_MIN": "0.1", "LOAXA_HEALTH_CHECK_INTERVAL_S": "2"}
    with running_installation(tmp_path, env_overrides=overrides) as running:
        yield running


def clock_alarms(installation: Installation, station_id: str) -> list[dict[str, Any]]:
    alarms = installation.server.get(f"/api/v1/alarms?station_id={station_id}")
    return [a for a in alarms if a["kind"] == "clock_offset"]


def test_a_clock_30_s_off_raises_the_alarm_and_fixing_it_clears_the_alarm(
    installation: Installation,
) -> None:
    station = installation.add_station("Cụm loa lệch giờ")
    sid = station.station_id
    station.stop()
    station.module = "tests.faults.skewed_clock"
    station.extra_env = {"LOAXA_FAULT_CLOCK_OFFSET_S": str(OFFSET_S)}
    station.start()

    open_alarm = wait_until(
        lambda: [a for a in clock_alarms(installation, sid) if a["state"] == "open"],
        60,
        "the clock alarm",
    )[0]
    # "clock off by +29996 ms (alarm beyond ±500 ms)": measured to within a second.
    measured_ms = float(re.search(r"([+-]\d+) ms", open_alarm["detail"])[1])  # type: ignore[index]
    assert measured_ms == pytest.approx(OFFSET_S * 1000, abs=1000), open_alarm

    station.stop()  # NTP answered: the same station, right clock
    station.module, station.extra_env = "loaxa", {}
    station.start()
    wait_until(
        lambda: all(a["state"] == "resolved" for a in clock_alarms(installation, sid)),
        60,
        "the clock alarm to clear",
    )
