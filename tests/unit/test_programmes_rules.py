"""The pure parts of programmes: composition, overlaps, approval and the YAML-free spec."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from loaxa_protocol import Priority
from server.programmes.approval import (
    ApprovalAction,
    ApprovalError,
    ProgrammeState,
    transition,
)
from server.programmes.conflicts import Occupant, Part, Span, find_clash
from server.programmes.spec import ProgrammeSpec
from server.programmes.timeline import (
    AudioInfo,
    ResolvedItem,
    Source,
    compose,
    total_ms,
)

MON_0500 = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)


def audio(asset_id: int, ms: int) -> Source:
    return Source(ms, audio=AudioInfo(asset_id, f"{asset_id:064x}", 100, ms, "opus"))


def test_compose_lays_items_end_to_end_with_repeats_gaps_and_silence() -> None:
    segments = compose(
        [
            ResolvedItem(1, "VOV1", "stream", (Source(600_000, stream_url="http://vov/1"),)),
            ResolvedItem(2, "", "silence", (Source(5_000),)),
            ResolvedItem(
                3, "Tin", "playlist", (audio(1, 1_000), audio(2, 2_000)), repeat=3, gap_ms=500
            ),
            ResolvedItem(4, "Loa", "tts", (audio(3, 4_000),), volume=40),
        ]
    )
    layout = [(s.item, s.track, s.rep, s.offset_ms, s.length_ms) for s in segments]
    assert layout == [
        (1, 0, 1, 0, 600_000),
        (2, 0, 1, 600_000, 5_000),
        (3, 1, 1, 605_000, 1_000),
        (3, 2, 1, 606_000, 2_000),
        (3, 1, 2, 608_500, 1_000),
        (3, 2, 2, 609_500, 2_000),
        (3, 1, 3, 612_000, 1_000),
        (3, 2, 3, 613_000, 2_000),
        (4, 0, 1, 615_000, 4_000),
    ]
    assert total_ms(segments) == 619_000
    assert segments[-1].volume == 40
    assert segments[1].kind == "silence"  # the 5 s between the relay and the playlist


def occupant(
    key: str,
    starts: list[datetime],
    length_s: float,
    stations: set[str],
    priority: Priority = Priority.NORMAL,
) -> Occupant:
    span = timedelta(seconds=length_s)
    return Occupant(
        key,
        key.title(),
        priority,
        frozenset(stations),
        tuple(Span(s, s + span) for s in starts),
        (Part(0, int(length_s * 1000), "item 1 'x'"),),
    )


def test_an_overlap_names_both_items_the_station_and_the_local_time() -> None:
    days = [MON_0500 + timedelta(days=d) for d in range(6)]
    relay = occupant("vov", days, 1800, {"st-1", "st-2"})
    news = occupant("news", [MON_0500 + timedelta(days=2, minutes=20)], 600, {"st-2", "st-3"})
    clash = find_clash(news, [relay])
    assert clash is not None
    assert clash.station_id == "st-2" and clash.at == MON_0500 + timedelta(days=2, minutes=20)
    assert clash.message == (
        "overlap at normal priority on station st-2 at Wed 2026-12-09 05:20 (local): "
        "'News' item 1 'x' (05:20–05:30) overlaps 'Vov' item 1 'x' (05:00–05:30); move one "
        "of them or give one a different priority"
    )


def test_touching_spans_different_priorities_and_other_stations_do_not_clash() -> None:
    relay = occupant("vov", [MON_0500], 1800, {"st-1"})
    after = occupant("news", [MON_0500 + timedelta(minutes=30)], 600, {"st-1"})
    elsewhere = occupant("far", [MON_0500], 600, {"st-9"})
    background = occupant("music", [MON_0500], 600, {"st-1"}, Priority.BACKGROUND)
    assert find_clash(after, [relay]) is None
    assert find_clash(elsewhere, [relay]) is None
    assert find_clash(background, [relay]) is None


def test_a_rule_that_overlaps_itself_clashes_and_extra_clashes_are_counted() -> None:
    every_10_min = [MON_0500 + timedelta(minutes=10 * i) for i in range(4)]
    clash = find_clash(occupant("long", every_10_min, 900, {"st-1"}), [])
    assert clash is not None and clash.more == 2 and "05:10" in clash.message
    assert "(and 2 more clashes)" in clash.message


def test_the_approval_life() -> None:
    state = ProgrammeState.DRAFT
    for action, expected in [
        (ApprovalAction.SUBMIT, ProgrammeState.SUBMITTED),
        (ApprovalAction.REJECT, ProgrammeState.REJECTED),
        (ApprovalAction.SUBMIT, ProgrammeState.SUBMITTED),
        (ApprovalAction.APPROVE, ProgrammeState.APPROVED),
        (ApprovalAction.EDIT, ProgrammeState.DRAFT),
        (ApprovalAction.ARCHIVE, ProgrammeState.ARCHIVED),
    ]:
        state = transition(state, action)
        assert state == expected
    with pytest.raises(
        ApprovalError,
        match="cannot edit a programme that is archived; possible: "
        r"nothing \(it is archived\)",
    ):
        transition(state, ApprovalAction.EDIT)
    with pytest.raises(
        ApprovalError,
        match="cannot approve a programme that is draft; possible: archive, edit, submit",
    ):
        transition(ProgrammeState.DRAFT, ApprovalAction.APPROVE)


def spec(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "key": "sang",
        "title": "Buổi sáng",
        "area": "01273",
        "start": "2026-12-07T05:00:00",
        "targets": {"areas": ["01273"]},
        "items": [{"kind": "silence", "seconds": 5}],
    }
    body.update(overrides)
    return body


def test_the_spec_keeps_local_time_and_turns_offsets_into_it() -> None:
    assert ProgrammeSpec.model_validate(spec()).start == datetime(2026, 12, 7, 5, 0)
    shifted = ProgrammeSpec.model_validate(spec(start="2026-12-06T22:00:00Z"))
    assert shifted.start == datetime(2026, 12, 7, 5, 0)
    dated = ProgrammeSpec.model_validate(spec(exceptions=["2027-01-01", "2026-12-25T05:00:00"]))
    assert [type(e).__name__ for e in dated.exceptions] == ["date", "datetime"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"items": [{"kind": "audio"}]}, "exactly one of audio_id or file"),
        ({"items": [{"kind": "stream", "url": "rtsp://x", "window_min": 5}]}, "should match"),
        ({"items": [{"kind": "speech", "text": "x"}]}, "does not match any of the expected tags"),
        ({"items": [{"kind": "tts", "text": "x", "volume": 120}]}, "less than or equal to 100"),
        ({"targets": {}}, "no target"),
        ({"key": "Sáng"}, "should match pattern"),
        ({"titel": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_spec_mistakes_are_named(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ProgrammeSpec.model_validate(spec(**overrides))


def test_the_pure_modules_import_without_web_or_database() -> None:
    code = (
        "import sys\n"
        "import server.programmes.recurrence, server.programmes.timeline\n"
        "import server.programmes.conflicts, server.programmes.approval, server.programmes.spec\n"
        "import server.programmes.changes\n"
        "import server.planning.compiler, server.planning.rolling\n"
        "bad = {'fastapi', 'sqlmodel', 'sqlalchemy', 'paho', 'apscheduler'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
