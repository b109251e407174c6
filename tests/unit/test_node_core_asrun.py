"""A rebooted station says what happened to the items it could not play (issue 11, §3.1)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from node_firmware.core.asrun import AsRunMemory
from node_firmware.core.events import (
    AudioFetched,
    Boot,
    PlanReceived,
    PlaybackFinished,
    PlaybackStarted,
    Publish,
    SaveState,
)
from tests.unit.test_node_core import SHA_A, T0, Harness, item, sealed


@pytest.fixture
def station() -> Harness:
    harness = Harness()
    harness.feed(Boot(stored_plan=None))
    return harness


def last_saved(h: Harness) -> SaveState:
    return [a for _, a in h.of(SaveState)][-1]


def booted(h: Harness, after: timedelta) -> Harness:
    saved = last_saved(h)
    rebooted = Harness(now=T0 + after)
    rebooted.feed(Boot(saved.plan_raw, saved.memory, cached_audio=frozenset({SHA_A})))
    return rebooted


def finals(h: Harness) -> list[tuple[str, str, str | None]]:
    """The as-run outcomes reported (audio readiness is not one)."""
    return [
        (e["item_id"], e["kind"], e.get("reason"))
        for e in h.events()
        if e["kind"] in {"played", "interrupted", "failed"}
    ]


def test_the_boot_reports_what_it_missed_and_what_the_reboot_cut_but_not_what_played(
    station: Harness,
) -> None:
    h = station
    played = item("b-played", timedelta(seconds=10), duration_ms=5_000)
    cut = item("b-cut", timedelta(seconds=20), duration_ms=30_000)
    missed = item("b-missed", timedelta(seconds=60), duration_ms=5_000)
    later = item("b-later", timedelta(hours=1))
    h.feed(PlanReceived(sealed(played, cut, missed, later)))
    h.feed(AudioFetched(SHA_A))
    h.run_until(T0 + timedelta(seconds=10))
    h.feed(PlaybackStarted("b-played", T0 + timedelta(seconds=10)))
    h.now = T0 + timedelta(seconds=15)
    h.feed(PlaybackFinished("b-played", h.now))
    h.run_until(T0 + timedelta(seconds=20))
    h.feed(PlaybackStarted("b-cut", T0 + timedelta(seconds=20)))
    # power cut at 00:25; the station is back at 02:00

    rebooted = booted(h, timedelta(minutes=2))
    assert finals(rebooted) == [
        ("b-cut", "interrupted", "restart"),
        ("b-missed", "failed", "station_down"),
    ]
    interrupted = rebooted.events("interrupted")[0]
    assert interrupted["started_at"].startswith("2026-11-25T09:00:20")
    assert all(a.durable for _, a in rebooted.of(Publish) if a.topic.endswith("/event"))

    # what the boot decided is saved: a second reboot repeats none of it
    again = booted(rebooted, timedelta(minutes=3))
    assert finals(again) == []
    again.run_until(T0 + timedelta(hours=1))
    assert [e["item_id"] for e in again.events("failed")] == []  # b-later still plays


def test_an_outcome_is_saved_when_it_happens(station: Harness) -> None:
    h = station
    h.feed(PlanReceived(sealed(item("b-1", timedelta(seconds=10), duration_ms=5_000))))
    h.feed(AudioFetched(SHA_A))
    h.run_until(T0 + timedelta(seconds=10))
    h.log.clear()
    h.feed(PlaybackStarted("b-1", T0 + timedelta(seconds=10)))
    assert "b-1" in last_saved(h).memory["asrun"]["started"]
    h.feed(PlaybackFinished("b-1", T0 + timedelta(seconds=15)))
    assert last_saved(h).memory["asrun"]["ended"] == {"b-1": "played"}


def test_a_station_upgraded_without_this_memory_stays_silent_about_the_past() -> None:
    raw = sealed(item("b-old", timedelta(seconds=10), duration_ms=5_000))
    rebooted = Harness(now=T0 + timedelta(minutes=5))
    rebooted.feed(Boot(raw, {"guard": {}}, cached_audio=frozenset({SHA_A})))
    assert finals(rebooted) == []
    assert AsRunMemory.from_json({"started": "nonsense"}).known is False
