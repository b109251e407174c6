"""The plan compiler: a pure function of (entries, now), checked with an injected clock.

Broadcasts and programme occurrences (streams, playlists, repeats, volume) alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from loaxa_protocol import Keyring, Plan, Priority, SigningKey, Verified, open_envelope, seal
from loaxa_protocol.envelope import MAX_ENVELOPE_BYTES
from server.keys import ServerKeys
from server.planning.compiler import (
    MAX_PLAN_ITEMS,
    PlanEntry,
    broadcast_id_of,
    compile_plan,
    item_id_for,
)
from server.planning.publisher import PlanPublisher
from server.programmes.timeline import (
    AudioInfo,
    ProgrammeItemRef,
    ResolvedItem,
    Source,
    compose,
    expand,
    programme_item_of,
)
from server.settings import Settings

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


# ------------------------------------------------- programme occurrences, streams, volume

VN_MON_0500 = datetime(2025, 7, 6, 22, 0, tzinfo=UTC)  # Monday 7 July 05:00 in Cao Bằng


def audio_info(asset_id: int, duration_ms: int) -> AudioInfo:
    return AudioInfo(asset_id, f"{asset_id:064x}", 5000, duration_ms, "opus")


def url(asset_id: int) -> str:
    return f"http://server/api/v1/audio/{asset_id}/content?exp=1&sig=x"


MORNING = [
    ResolvedItem(
        1,
        "VOV1",
        "stream",
        (Source(1_800_000, stream_url="http://vov/vov1", fallback=None),),
        volume=70,
    ),
    ResolvedItem(2, "nghỉ", "silence", (Source(10_000),)),
    ResolvedItem(
        3,
        "Bản tin xã",
        "playlist",
        (Source(60_000, audio=audio_info(7, 60_000)), Source(30_000, audio=audio_info(8, 30_000))),
        volume=90,
        repeat=2,
        gap_ms=5_000,
    ),
]


def programme_plan(now: datetime, days: int = 3) -> Plan:
    segments = compose(MORNING)
    starts = [VN_MON_0500 + timedelta(days=d) for d in range(days)]
    entries = expand(12, "Buổi sáng", Priority.NORMAL, segments, starts, url)
    return compile_([*entries, entry(1, VN_MON_0500 - NOW + timedelta(hours=30))], now=now)


def test_programme_occurrences_become_stream_and_audio_items_with_stable_ids() -> None:
    plan = compile_(
        expand(12, "Buổi sáng", Priority.NORMAL, compose(MORNING), [VN_MON_0500], url),
        now=VN_MON_0500 - timedelta(hours=1),
    )
    assert ids(plan) == [
        "p12.1.1.202507070500",
        "p12.3-1.1.202507070500",
        "p12.3-2.1.202507070500",
        "p12.3-1.2.202507070500",
        "p12.3-2.2.202507070500",
    ]
    stream, first, second, again, last = plan.items
    assert stream.stream is not None and stream.stream.url == "http://vov/vov1"
    assert stream.audio is None and stream.window_ms == 1_800_000 and stream.volume_pct == 70
    # Silence is no plan item, but it keeps its place in the timeline.
    assert first.start_at == stream.end_at + timedelta(seconds=10)
    assert second.start_at == first.end_at and first.volume_pct == 90
    assert again.start_at == second.end_at + timedelta(seconds=5)
    assert last.title == "Buổi sáng — Bản tin xã #2 (lần 2)"
    for item in plan.items:
        assert programme_item_of(item.item_id) is not None
    assert programme_item_of("p12.3-2.2.202507070500") == ProgrammeItemRef(
        12, 3, 2, 2, "202507070500"
    )
    assert programme_item_of("b-12") is None


def test_a_stream_with_a_fallback_names_the_fallback_as_needed_audio() -> None:
    items = [
        ResolvedItem(
            1,
            "VOV1",
            "stream",
            (Source(600_000, stream_url="http://vov/vov1", fallback=audio_info(3, 20_000)),),
        )
    ]
    plan = compile_(
        expand(5, "T", Priority.BACKGROUND, compose(items), [VN_MON_0500], url), now=VN_MON_0500
    )
    (item,) = plan.items
    assert item.stream is not None and item.stream.fallback is not None
    assert item.needed_audio == [item.stream.fallback]
    assert item.stream.fallback.url == url(3) and item.priority == Priority.BACKGROUND


def test_the_horizon_rolls_over_the_days_and_plans_are_byte_identical() -> None:
    # At 04:00 local Monday the 48-hour horizon holds Monday's and Tuesday's mornings.
    early = VN_MON_0500 - timedelta(hours=1)
    plan = programme_plan(early)
    mornings = {i.item_id.rsplit(".", 1)[1] for i in plan.items if i.item_id[0] == "p"}
    assert mornings == {"202507070500", "202507080500"}
    assert "b-1" in ids(plan)
    # Mid-stream on Monday, the relay already playing stays (a new plan never cuts it off).
    mid = programme_plan(VN_MON_0500 + timedelta(minutes=10))
    assert ids(mid)[0] == "p12.1.1.202507070500"
    # Tuesday 05:10: Tuesday's relay is playing, Thursday 05:00 has just come into reach.
    later = programme_plan(VN_MON_0500 + timedelta(days=1, minutes=10), days=5)
    assert {i.item_id.rsplit(".", 1)[1] for i in later.items if i.item_id[0] == "p"} == {
        "202507080500",
        "202507090500",
        "202507100500",
    }
    key = SigningKey.generate("plan", frozenset({"plan"}))
    assert seal(programme_plan(early), key) == seal(programme_plan(early), key)


def test_programme_items_and_broadcasts_at_the_same_instant_sort_deterministically() -> None:
    same = VN_MON_0500 - NOW
    broadcast = entry(9, same, priority=Priority.NORMAL)
    occurrence = expand(3, "P", Priority.NORMAL, compose(MORNING[2:]), [VN_MON_0500], url)
    emergency = entry(10, same, priority=Priority.EMERGENCY)
    plan = compile_([*occurrence, broadcast, emergency], now=VN_MON_0500)
    assert ids(plan)[:3] == ["b-10", "b-9", "p3.3-1.1.202507070500"]
    assert compile_([emergency, broadcast, *reversed(occurrence)], now=VN_MON_0500) == plan


def test_an_occurrence_off_the_whole_minute_keeps_its_seconds_in_the_id() -> None:
    drill = VN_MON_0500 + timedelta(seconds=20)
    entries = expand(4, "Diễn tập", Priority.NORMAL, compose(MORNING[2:]), [drill], url)
    assert entries[0].id == "p4.3-1.1.20250707050020"
    ref = programme_item_of(entries[0].id)
    assert ref is not None and ref.local_stamp == "20250707050020"


def test_more_items_than_a_plan_may_carry_end_the_plan_early_and_honestly() -> None:
    # Three a minute for two days: more than the protocol's 2,000 items per plan.
    entries = [
        entry(n, timedelta(seconds=20 * n), duration_ms=10_000) for n in range(1, 3 * 60 * 48)
    ]
    plan = compile_(entries)  # would raise if it broke the protocol's cap
    assert len(plan.items) == MAX_PLAN_ITEMS
    last = plan.items[-1]
    # The plan says where it stops: right where the first item left out starts.
    assert plan.horizon_until == last.start_at + timedelta(seconds=20) < NOW + HORIZON
    assert ids(plan) == [f"b-{n}" for n in range(1, MAX_PLAN_ITEMS + 1)]


def test_items_starting_together_are_never_split_by_the_cap() -> None:
    together = [entry(n, timedelta(hours=1)) for n in range(1, 4)]
    plan = compile_plan(
        "cb-st-001",
        [entry(9, timedelta(minutes=1)), *together],
        now=NOW,
        horizon=HORIZON,
        seq=1,
        ttl=TTL,
        max_items=2,
    )
    assert ids(plan) == ["b-9"] and plan.horizon_until == NOW + timedelta(hours=1)


def test_a_plan_too_large_for_one_envelope_is_cut_to_fit_and_still_opens(tmp_path) -> None:
    settings = Settings(data_dir=tmp_path, public_url="http://testserver")
    keys = ServerKeys.load(settings)
    publisher = PlanPublisher(None, settings, keys, bus=None)  # type: ignore[arg-type]
    long_title = "Thông báo của Ủy ban nhân dân xã về việc phòng chống lụt bão " * 3
    entries = [
        replace(
            entry(n, timedelta(minutes=5 * n), duration_ms=60_000),
            title=long_title[:200],
            audio_url=f"http://server/api/v1/audio/{n}/content?exp=1&sig={'x' * 400}",
        )
        for n in range(1, 1900)
    ]
    plan, raw = publisher._fitting_plan("cb-st-001", entries, NOW, keep=[])
    assert len(raw) <= MAX_ENVELOPE_BYTES and len(plan.items) < len(entries)  # cut to fit
    keyring = Keyring.from_entries(keys.trusted_entries(NOW))
    opened = open_envelope(raw, keyring, NOW, {"cb-st-001"})
    assert isinstance(opened, Verified) and opened.message == plan
    # What it carries is a prefix of the programme, and it says where it ends.
    assert ids(plan) == [f"b-{n}" for n in range(1, len(plan.items) + 1)]
    assert plan.horizon_until == entries[len(plan.items)].start_at
