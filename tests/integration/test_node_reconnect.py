"""A real station agent finds a restarted Mosquitto within seconds (issue 11, §2)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loaxa_protocol import topics
from tests.node_process import StationProcess, station_process, wait_until

STATION = "st-reconnect-1"


@pytest.fixture
def station(tmp_path: Path, mosquitto) -> Iterator[StationProcess]:
    yield from station_process(tmp_path / "station", STATION, mosquitto)


def planned_waits(log: str) -> list[float]:
    return [float(w) for w in re.findall(r"next broker connection attempt in ([0-9.]+) s", log)]


def test_the_agent_is_back_within_seconds_of_the_broker_restarting(
    station: StationProcess, mosquitto, mqtt_probe
) -> None:
    probe = mqtt_probe(mosquitto, topics=[topics.status(STATION)])
    station.start()
    probe.wait_for(lambda m: m.json()["state"] == "online", 20)
    probe.clear()

    mosquitto.stop()
    time.sleep(3.0)
    waits = planned_waits(station.log_text())
    mosquitto.start()
    back = time.monotonic()
    # the probe reconnects within a second; the station's "online" is what counts
    wait_until(
        lambda: any(m.json()["state"] == "online" for m in probe.on(topics.status(STATION))),
        30,
        "the station to reconnect",
    )
    took = time.monotonic() - back

    # After a stable connection the first retry comes within the 1 s base; the waits
    # are drawn from windows doubling from there (full jitter, never above the cap).
    assert waits and waits[0] <= 1.0, waits
    windows = [min(60.0, 2.0**i) for i in range(len(waits))]
    assert all(w <= cap + 0.05 for w, cap in zip(waits, windows, strict=True)), waits
    # It reconnects as soon as the wait running when the broker returned is over: that
    # wait is at most the next window. The old schedule slept up to 60 s here.
    assert took <= windows[-1] * 2 + 1.5, f"back {took:.1f} s after the broker returned ({waits})"
    assert took < 20
