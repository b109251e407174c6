"""A station whose player hangs (issue 11, §3.7): the real agent loop, a real Mosquitto,
the simulated relay board on a pseudo-terminal, and a player that sticks on the device.

The stuck player is a test double of the audio device, not of the logic: it is the
simulated player except that one item's "device write" blocks and ignores every stop,
as a wedged ALSA device does, until the agent restarts the player.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol import AudioRef, PlanItem, SigningKey, topics
from node_firmware.agent import NodeAgent
from node_firmware.config import (
    MqttConfig,
    NodeConfig,
    PlayerConfig,
    RelayConfig,
    TrustedKeyConfig,
)
from node_firmware.core.machine import HANG_MARGIN
from node_firmware.drivers.ogg import audio_duration_ms
from node_firmware.drivers.player import SimulatedPlayer, _Playback
from tests.audio_samples import make_audio
from tests.node_process import signed_plan, wait_until

STATION = "st-hung-1"


class StuckDevicePlayer(SimulatedPlayer):
    """Plays like the simulated player; ``stuck_item`` starts and then never returns."""

    def __init__(self, stuck_item: str) -> None:
        super().__init__()
        self.stuck_item = stuck_item
        self.restarts = 0
        self._unwedged = threading.Event()

    def _run(self, playback: _Playback) -> None:
        if playback.item_id != self.stuck_item:
            super()._run(playback)
            return
        if not playback.cancel.wait(max(0.0, playback.start_s - time.time())):
            playback.started(time.time())
        self._unwedged.wait(120)  # a blocked write: stop() cannot reach it

    def restart(self) -> None:
        self.restarts += 1
        super().restart()
        self._unwedged.set()  # as killing aplay breaks the blocked write


@pytest.fixture
def agent(tmp_path: Path, mosquitto) -> Iterator[tuple[NodeAgent, StuckDevicePlayer, SigningKey]]:
    key = SigningKey.generate("plan", frozenset({"plan"}))
    config = NodeConfig(
        station_id=STATION,
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        trusted_keys=[TrustedKeyConfig(kid=key.kid, public_key=key.public_b64, purposes=["plan"])],
        data_dir=tmp_path / "node",
        relay=RelayConfig(driver="sim"),
        player=PlayerConfig(driver="sim"),
        amp_lead_ms=300,
        amp_tail_ms=200,
    )
    player = StuckDevicePlayer("b-stuck")
    node = NodeAgent(config, player=player)
    thread = threading.Thread(target=node.run, name="node", daemon=True)
    thread.start()
    wait_until(lambda: node.core.connected, 10, "the agent to connect")
    yield node, player, key
    node.stop()
    thread.join(10)


def test_a_hung_item_fails_player_hung_the_amplifier_goes_off_and_the_next_item_plays(
    agent: tuple[NodeAgent, StuckDevicePlayer, SigningKey], mosquitto, mqtt_probe
) -> None:
    node, player, key = agent
    audio = make_audio("ogg", 1.0)
    sha = hashlib.sha256(audio).hexdigest()
    node.cache.store(sha, audio)
    node.core.cached.add(sha)  # as Boot would have listed it
    ref = AudioRef(
        sha256=sha, size_bytes=len(audio), duration_ms=audio_duration_ms(audio), url="http://x/"
    )
    now = datetime.now(UTC)
    stuck_at = now + timedelta(seconds=2)
    stuck = PlanItem(item_id="b-stuck", start_at=stuck_at, audio=ref)
    next_at = stuck.end_at + HANG_MARGIN + timedelta(seconds=3)
    after = PlanItem(item_id="b-after", start_at=next_at, audio=ref)
    probe = mqtt_probe(mosquitto, topics=[topics.event(STATION)])
    probe.publish(topics.plan(STATION), signed_plan(STATION, key, [stuck, after]), retain=True)

    failed = probe.wait_for(lambda m: m.json()["kind"] == "failed", 30).json()
    assert (failed["item_id"], failed["reason"]) == ("b-stuck", "player_hung")
    hung_at = datetime.fromisoformat(failed["at"])
    assert stuck.end_at + HANG_MARGIN <= hung_at < stuck.end_at + HANG_MARGIN + timedelta(seconds=2)
    assert player.restarts == 1
    assert node.board is not None
    wait_until(lambda: node.board.state.get(1) is False, 3, "the amplifier to go off")

    played = probe.wait_for(lambda m: m.json()["kind"] == "played", 30).json()
    assert played["item_id"] == "b-after"
    assert [r.item_id for r in player.records] == ["b-after"]
