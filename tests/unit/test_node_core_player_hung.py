"""A hung player costs one item, not the rest of the day (issue 11, §3.7)."""

from __future__ import annotations

from datetime import timedelta

from node_firmware.core.events import (
    AlertReceived,
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
from tests.unit.test_node_core_alerts import alert, alert_events, make_station


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


def test_a_hung_alert_part_does_not_hold_the_amplifier_until_the_alert_expires() -> None:
    st = make_station()
    st.feed(AlertReceived(alert(tone=None, repeat=1)))  # 20 s message, expires in 2 h
    st.feed(PlaybackStarted("alert:a-1#0", T0))
    st.run_until(T0 + timedelta(seconds=20) + HANG_MARGIN)
    (failed,) = [e for e in alert_events(st) if e["kind"] == "alert_failed"]
    assert failed["reason"] == "player_hung"
    assert len(st.of(RestartPlayer)) == 1
    st.run_until(T0 + timedelta(seconds=40))
    assert st.of(SetRelay)[-1][1] == SetRelay(False)
