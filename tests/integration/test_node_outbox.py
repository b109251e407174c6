"""Events a station produced offline reach the server after a power cut (issue 11, §3.1).

A real agent process, a real Mosquitto, the real disk: the broker goes away, an item
plays, the station loses power before the broker returns; after the reboot the
station sends what it played, and says which item it missed while it was down.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol import PlanItem, topics
from tests.audio_samples import make_audio
from tests.node_process import StationProcess, station_process, wait_until

STATION = "st-outbox-1"


@pytest.fixture
def station(tmp_path: Path, mosquitto) -> Iterator[StationProcess]:
    yield from station_process(tmp_path / "station", STATION, mosquitto)


def test_events_produced_offline_survive_a_power_cut_and_arrive_in_order(
    station: StationProcess, mosquitto, mqtt_probe
) -> None:
    audio = station.cache_audio(make_audio("ogg", 1.0))
    probe = mqtt_probe(mosquitto, topics=[topics.event(STATION)])
    station.start()
    start = datetime.now(UTC) + timedelta(seconds=6)
    played_offline = PlanItem(item_id="b-offline", start_at=start, audio=audio)
    missed = PlanItem(item_id="b-missed", start_at=start + timedelta(seconds=4), audio=audio)
    probe.publish(topics.plan(STATION), station.plan([played_offline, missed]), retain=True)
    probe.wait_for(lambda m: m.json()["item_id"] == "b-missed", 20)  # plan_accepted: online

    mosquitto.stop()
    wait_until(lambda: datetime.now(UTC) > played_offline.end_at + timedelta(seconds=1), 20, "")
    station.kill()  # power cut before the broker returns: the events exist only on disk
    wait_until(lambda: datetime.now(UTC) > missed.end_at + timedelta(seconds=1), 20, "")

    mosquitto.start()
    probe = mqtt_probe(mosquitto, topics=[topics.event(STATION)])
    station.start()
    events = probe.wait_for_count(3, timeout=30)
    got = [(m.json()["item_id"], m.json()["kind"], m.json().get("reason")) for m in events]
    assert got == [
        ("b-offline", "playing", None),
        ("b-offline", "played", None),
        ("b-missed", "failed", "station_down"),
    ]
    playing = events[0].json()
    started = datetime.fromisoformat(playing["started_at"])
    assert abs((started - start).total_seconds()) < 0.5  # it played on time, offline

    # Acknowledged by the broker: a second reboot sends none of them again.
    time.sleep(1.0)
    station.stop()
    probe.clear()
    station.start()
    probe2 = mqtt_probe(mosquitto, topics=[topics.status(STATION)])
    probe2.wait_for(lambda m: m.json()["state"] == "online", 20)
    time.sleep(1.5)
    assert probe.on(topics.event(STATION)) == []
