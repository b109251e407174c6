"""Events a station produced offline reach the server after a power cut (issue 11, §3.1).

A real agent process, a real Mosquitto, the real disk: the broker goes away, an item
plays, the station loses power before the broker returns; after the reboot the
station sends what it played, and says which item it missed while it was down.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol import PlanItem, topics
from node_firmware.core.outbox import HEALTH_BACKLOG
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
    ready = probe.wait_for_count(  # online, and both items' audio verified
        2, lambda m: m.json()["kind"] == "audio_fetched", 20
    )
    assert {m.json()["item_id"] for m in ready} == {"b-offline", "b-missed"}

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

    # Acknowledged by the broker: even after a crash, the next boot sends none again.
    time.sleep(1.0)
    station.kill()
    probe.clear()
    station.start()
    probe2 = mqtt_probe(mosquitto, topics=[topics.status(STATION)])
    probe2.wait_for(lambda m: m.json()["state"] == "online", 20)
    time.sleep(1.5)
    assert probe.on(topics.event(STATION)) == []


def test_events_produced_while_the_broker_is_away_arrive_after_it_returns_once_each(
    station: StationProcess, mosquitto, mqtt_probe
) -> None:
    audio = station.cache_audio(make_audio("ogg", 1.0))
    probe = mqtt_probe(mosquitto, topics=[topics.event(STATION)])
    station.start()
    items = [
        PlanItem(
            item_id=f"b-{n}", start_at=datetime.now(UTC) + timedelta(seconds=6 + 2 * n), audio=audio
        )
        for n in range(3)
    ]
    probe.publish(topics.plan(STATION), station.plan(items), retain=True)
    probe.wait_for_count(3, lambda m: m.json()["kind"] == "audio_fetched", 20)

    mosquitto.stop()
    wait_until(lambda: datetime.now(UTC) > items[-1].end_at + timedelta(seconds=1), 30, "")
    mosquitto.start()
    probe = mqtt_probe(mosquitto, topics=[topics.event(STATION)])
    events = probe.wait_for_count(6, timeout=30)
    got = [(m.json()["item_id"], m.json()["kind"]) for m in events]
    assert got == [(f"b-{n}", kind) for n in range(3) for kind in ("playing", "played")]
    time.sleep(2.0)
    assert len(probe.on(topics.event(STATION))) == 6  # each once


def test_heartbeats_held_offline_are_bounded_and_the_drops_are_counted(
    tmp_path: Path, mosquitto, mqtt_probe
) -> None:
    """The agent in this process, beating every 50 ms so that an outage of a few seconds
    overflows the backlog of 60: the held heartbeats reach paho after the broker returns,
    the first of them saying how many older ones were dropped."""
    from node_firmware.agent import NodeAgent
    from node_firmware.config import MqttConfig, NodeConfig

    config = NodeConfig(
        station_id=STATION,
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        trusted_keys=[],
        data_dir=tmp_path / "node",
        heartbeat_s=0.05,
    )
    agent = NodeAgent(config)
    sent: list[dict] = []  # what reached paho on the health topic, in order
    publish = agent.link.publish

    def recording(topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        if topic == topics.health(STATION):
            sent.append(json.loads(payload))
        return publish(topic, payload, qos, retain)

    agent.link.publish = recording  # type: ignore[method-assign]
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: agent.core.connected, 10, "the agent to connect")
        mosquitto.stop()
        wait_until(lambda: not agent.link.connected, 10, "the agent to notice")
        before = len(sent)
        wait_until(lambda: agent.courier.health_backlog.dropped >= 5, 60, "the backlog to overflow")
        mosquitto.start()
        wait_until(lambda: len(sent) >= before + HEALTH_BACKLOG + 5, 60, "the held heartbeats")
    finally:
        agent.stop()
        thread.join(10)
    after = sent[before:]
    counted = [b["health_dropped"] for b in after if "health_dropped" in b]
    assert len(counted) == 1 and counted[0] >= 5, counted
    assert after[0].get("health_dropped") == counted[0]  # on the oldest held heartbeat
    stamps = [datetime.fromisoformat(b["at"]) for b in after]
    assert stamps == sorted(stamps)  # held ones first, in order, then fresh ones
