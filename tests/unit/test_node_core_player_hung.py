"""A hung player costs one item, not the rest of the day (issue 11, §3.7)."""

from __future__ import annotations

from datetime import timedelta

from node_firmware.core.events import (
    AudioFetched,
    Boot,
    PlanReceived,
    PlaybackFinished,
    PlaybackStarted,
    RestartPlayer,
    SetRelay,
    StartPlayback,
    StopPlayback,
)
from node_firmware.core.machine import HANG_MARGIN
from tests.unit.test_node_core import SHA_A, T0, Harness, item, sealed


def test_past_its_deadline_the_item_fails_player_hung_and_the_next_one_plays() -> None:
    h = Harness()
    h.feed(Boot(stored_plan=None))
    stuck = item("b-stuck", timedelta(seconds=10), duration_ms=20_000)
    after = item("b-after", timedelta(seconds=60), duration_ms=5_000)
    h.feed(PlanReceived(sealed(stuck, after)))
    h.feed(AudioFetched(SHA_A))
    h.run_until(T0 + timedelta(seconds=10))
    h.feed(PlaybackStarted("b-stuck", T0 + timedelta(seconds=10)))
    # the player never reports the end at 00:30
    deadline = T0 + timedelta(seconds=30) + HANG_MARGIN
    h.run_until(deadline - timedelta(milliseconds=1))
    assert h.events("failed") == [] and h.of(RestartPlayer) == []

    h.run_until(deadline)
    (failed,) = h.events("failed")
    assert (failed["item_id"], failed["reason"]) == ("b-stuck", "player_hung")
    assert failed["started_at"].startswith("2026-11-25T09:00:10")
    assert [a.item_id for t, a in h.of(StopPlayback) if t == deadline] == ["b-stuck"]
    assert len([a for t, a in h.of(RestartPlayer) if t == deadline]) == 1
    assert h.of(SetRelay)[-1] == (deadline, SetRelay(False))  # the amplifier goes off

    h.run_until(T0 + timedelta(seconds=60))
    assert [a.item_id for _, a in h.of(StartPlayback)] == ["b-stuck", "b-after"]
    h.feed(PlaybackStarted("b-after", T0 + timedelta(seconds=60)))
    h.now = T0 + timedelta(seconds=65)
    h.feed(PlaybackFinished("b-after", h.now))
    assert [e["item_id"] for e in h.events("played")] == ["b-after"]
    # the hung item's late news changes nothing
    h.feed(PlaybackFinished("b-stuck", h.now))
    assert [e["item_id"] for e in h.events("played")] == ["b-after"]


def test_an_item_that_ends_on_time_never_trips_the_deadline() -> None:
    h = Harness()
    h.feed(Boot(stored_plan=None))
    h.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=10), duration_ms=20_000))))
    h.feed(AudioFetched(SHA_A))
    h.run_until(T0 + timedelta(seconds=10))
    h.feed(PlaybackStarted("b-1", T0 + timedelta(seconds=10)))
    h.now = T0 + timedelta(seconds=30, milliseconds=400)  # a little late, as players are
    h.feed(PlaybackFinished("b-1", h.now))
    h.run_until(T0 + timedelta(minutes=5))
    assert h.of(RestartPlayer) == [] and h.events("failed") == []
