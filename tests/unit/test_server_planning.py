"""The plan compiler: a pure function of (entries, now), checked with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from loaxa_protocol import Keyring, Plan, Priority, SigningKey, Verified, open_envelope, seal
from server.planning.compiler import PlanEntry, broadcast_id_of, compile_plan, item_id_for

NOW = datetime(2025, 7, 1, 4, 0, tzinfo=UTC)  # 11:00 in Cao Bằng
HORIZON = timedelta(hours=48)
TTL = timedelta(hours=72)


def entry(
    broadcast_id: int,
    start: timedelta,
    duration_ms: int = 60_000,
    priority: Priority = Priority.NORMAL,
) -> PlanEntry:
    return PlanEntry(
        broadcast_id=broadcast_id,
        title=f"Bản tin {broadcast_id}",
        start_at=NOW + start,
        priority=priority,
        sha256=f"{broadcast_id:064x}",
        size_bytes=1000,
        duration_ms=duration_ms,
        codec="opus",
        audio_url=f"http://server/api/v1/audio/{broadcast_id}/content?exp=1&sig=x",
    )


def compile_(entries: list[PlanEntry], now: datetime = NOW, seq: int = 7) -> Plan:
    return compile_plan("cb-st-001", entries, now=now, horizon=HORIZON, seq=seq, ttl=TTL)


def ids(plan: Plan) -> list[str]:
    return [item.item_id for item in plan.items]


def test_items_are_sorted_by_start_and_addressed_to_the_station() -> None:
    plan = compile_([entry(3, timedelta(hours=5)), entry(1, timedelta(hours=1))])
    assert ids(plan) == ["b-1", "b-3"]
    assert (plan.station_id, plan.to, plan.sender, plan.seq) == (
        "cb-st-001",
        "cb-st-001",
        "server",
        7,
    )
    assert plan.issued_at == NOW
    assert plan.expires_at == NOW + TTL
    assert plan.horizon_until == NOW + HORIZON
    first = plan.items[0]
    assert first.start_at == NOW + timedelta(hours=1)
    assert first.audio.sha256 == f"{1:064x}"
    assert first.audio.duration_ms == 60_000
    assert first.title == "Bản tin 1"


def test_an_item_already_playing_stays_until_its_audio_ends() -> None:
    started = entry(1, -timedelta(seconds=30), duration_ms=60_000)
    assert ids(compile_([started])) == ["b-1"]
    assert ids(compile_([started], now=NOW + timedelta(seconds=30))) == []
    assert ids(compile_([started], now=NOW + timedelta(seconds=29, milliseconds=999))) == ["b-1"]


def test_items_beyond_the_horizon_wait_for_a_later_plan() -> None:
    inside = entry(1, HORIZON - timedelta(milliseconds=1))
    at_edge = entry(2, HORIZON)
    assert ids(compile_([inside, at_edge])) == ["b-1"]
    assert ids(compile_([inside, at_edge], now=NOW + timedelta(hours=1))) == ["b-1", "b-2"]


def test_equal_starts_put_the_higher_priority_first_and_are_deterministic() -> None:
    same = timedelta(hours=2)
    entries = [
        entry(5, same, priority=Priority.NORMAL),
        entry(4, same, priority=Priority.EMERGENCY),
        entry(2, same, priority=Priority.NORMAL),
    ]
    assert ids(compile_(entries)) == ["b-4", "b-2", "b-5"]
    assert compile_(entries) == compile_(list(reversed(entries)))


def test_an_empty_plan_is_still_a_valid_plan() -> None:
    """An empty plan is how a station learns that its last broadcast was removed."""
    plan = compile_([])
    assert plan.items == []


def test_local_offsets_are_normalised_to_utc() -> None:
    hanoi = timezone(timedelta(hours=7))
    local = PlanEntry(
        **{**entry(1, timedelta()).__dict__, "start_at": datetime(2025, 7, 1, 17, 0, tzinfo=hanoi)}
    )
    plan = compile_([local])
    assert plan.items[0].start_at == datetime(2025, 7, 1, 10, 0, tzinfo=UTC)
    assert plan.items[0].start_at.utcoffset() == timedelta(0)


def test_a_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        compile_([], now=NOW.replace(tzinfo=None))


def test_the_compiled_plan_seals_and_opens_for_its_station_only() -> None:
    key = SigningKey.generate("plan", frozenset({"plan", "command"}))
    raw = seal(compile_([entry(1, timedelta(hours=1))]), key)
    opened = open_envelope(raw, Keyring.of(key), NOW, {"cb-st-001"})
    assert isinstance(opened, Verified)
    assert isinstance(opened.message, Plan)
    assert ids(opened.message) == ["b-1"]
    elsewhere = open_envelope(raw, Keyring.of(key), NOW, {"cb-st-002"})
    assert not isinstance(elsewhere, Verified)


@pytest.mark.parametrize(
    ("item_id", "expected"), [("b-42", 42), ("b-", None), ("x-1", None), ("b-1a", None)]
)
def test_item_ids_round_trip(item_id: str, expected: int | None) -> None:
    assert broadcast_id_of(item_id) == expected
    assert broadcast_id_of(item_id_for(42)) == 42
