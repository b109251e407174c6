"""A cached file whose bytes changed on disk (issue 11, §3.2), with a real agent.

The station is stopped, a byte of its cached bulletin is changed (an SD card rotting, a
person with a shell), and it boots again: it must report the file, discard it, fetch
it again over HTTP, and only then play it and report it played.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol import PlanItem, SigningKey, topics
from node_firmware.agent import NodeAgent
from node_firmware.config import NodeConfig, PlayerConfig, RelayConfig, TrustedKeyConfig
from node_firmware.core.events import AudioVerified, PlaybackFailed, StartPlayback
from node_firmware.drivers.player import SimulatedPlayer
from tests.audio_samples import make_audio
from tests.node_process import StationProcess, serving_audio, station_process
from tests.unit.test_driver_fetcher import AudioServer

STATION = "st-corrupt-1"


@pytest.fixture
def audio_server() -> Iterator[AudioServer]:
    with serving_audio() as server:
        yield server


@pytest.fixture
def station(tmp_path: Path, mosquitto) -> Iterator[StationProcess]:
    yield from station_process(tmp_path / "station", STATION, mosquitto)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_changed_audio_is_reported_fetched_again_and_only_the_true_bytes_play(
    station: StationProcess, audio_server: AudioServer, mosquitto, mqtt_probe
) -> None:
    bulletin = make_audio("ogg", 2.0)
    audio_server.files["/b.ogg"] = bulletin
    ref = station.cache_audio(bulletin, url=audio_server.url("/b.ogg"))
    cached = station.audio_dir / ref.sha256
    flip_a_byte(cached)  # changed while the station was off

    probe = mqtt_probe(mosquitto, topics=[topics.event(STATION)])
    item = PlanItem(item_id="b-1", start_at=datetime.now(UTC) + timedelta(seconds=8), audio=ref)
    probe.publish(topics.plan(STATION), station.plan([item]), retain=True)
    station.start()

    played = probe.wait_for(lambda m: m.json()["kind"] == "played", 30)
    kinds = [m.json()["kind"] for m in probe.on(topics.event(STATION))]
    assert kinds == ["plan_accepted", "audio_corrupt", "audio_fetched", "playing", "played"]
    corrupt = probe.on(topics.event(STATION))[1].json()
    assert corrupt["reason"] == "hash_mismatch" and corrupt["detail"].startswith(ref.sha256)
    assert played.json()["item_id"] == "b-1"
    assert audio_server.requests == [None]  # fetched again, whole
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == ref.sha256


def test_an_alert_file_not_yet_verified_is_hashed_before_it_sounds(tmp_path: Path) -> None:
    """The alert path does not wait for the background check: the agent hashes the file
    at the cue, and a changed file fails the playback instead of sounding."""
    key = SigningKey.generate("alert", frozenset({"alert"}))
    config = NodeConfig(
        station_id=STATION,
        trusted_keys=[TrustedKeyConfig(kid=key.kid, public_key=key.public_b64, purposes=["alert"])],
        data_dir=tmp_path / "node",
        relay=RelayConfig(driver="sim"),
        player=PlayerConfig(driver="sim"),
    )
    agent = NodeAgent(config)
    try:
        siren = make_audio("ogg", 1.0)
        sha = hashlib.sha256(siren).hexdigest()
        agent.cache.store(sha, siren)
        flip_a_byte(agent.cache.path(sha))
        agent._run(StartPlayback("alert:a-1#0", sha, datetime.now(UTC), 1000, verify=True))
        news = [agent.inputs.get(1), agent.inputs.get(1)]
        assert isinstance(news[0], AudioVerified) and not news[0].ok
        assert isinstance(news[1], PlaybackFailed) and "hash_mismatch" in news[1].reason
        assert isinstance(agent.player, SimulatedPlayer)
        time.sleep(1.5)  # long enough for a cue at "now" to have sounded
        assert agent.player.records == []
        assert not agent.cache.has(sha)
    finally:
        agent._shutdown()
