"""The fakes keep the contracts of the drivers they stand in for."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from loaxa_protocol.errors import RelayError
from node_firmware.drivers.player import Player
from node_firmware.drivers.relay import Relay
from tests.fakes.clock import FakeClock
from tests.fakes.player import FakePlayer
from tests.fakes.relay import FakeRelay


def test_fake_relay_history_and_failures() -> None:
    relay: Relay = FakeRelay()
    assert isinstance(relay, FakeRelay)
    relay.set(True)
    relay.fail_next(reason="board on fire")
    with pytest.raises(RelayError, match="board on fire"):
        relay.set(False)
    relay.unplug()
    with pytest.raises(RelayError, match="unplugged"):
        relay.set(False)
    relay.replug()
    relay.set(False)
    assert relay.history == [True, False]
    assert relay.attempts == [True, False, False, False]
    assert relay.on is False


def test_fake_player_triggers_and_stop() -> None:
    clock = FakeClock()
    events: list[tuple[str, object]] = []
    player: Player = FakePlayer()
    assert isinstance(player, FakePlayer)

    def start(item_id: str) -> None:
        player.start(
            item_id,
            Path(f"{item_id}.ogg"),
            clock.now(),
            2000,
            on_started=lambda i, at: events.append(("started", at)),
            on_finished=lambda i, at: events.append(("finished", at)),
            on_failed=lambda i, reason: events.append(("failed", reason)),
        )

    start("b-1")
    player.trigger_started("b-1")
    player.trigger_finished("b-1")
    player.fail_next("decoder crashed")
    start("b-2")
    start("b-3")
    player.stop("b-3")
    player.trigger_started("b-3")  # after stop: silent, like the real players

    at: datetime = clock.now()
    assert events == [
        ("started", at),
        ("finished", at + timedelta(seconds=2)),
        ("failed", "decoder crashed"),
    ]
    assert player.stopped == ["b-3"]


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock()
    start = clock.now()
    assert clock.advance(1.5) == start + timedelta(seconds=1.5)
    assert clock.advance(timedelta(minutes=1)) - start == timedelta(seconds=61.5)
    with pytest.raises(ValueError):
        clock.advance(-1)
