"""What changed since approval, spec against spec (``server.programmes.changes``)."""

from __future__ import annotations

from typing import Any

from server.programmes.changes import compare
from server.programmes.spec import ProgrammeSpec


def spec(**overrides: Any) -> ProgrammeSpec:
    body: dict[str, Any] = {
        "key": "tin-sang",
        "title": "Tin sáng",
        "area": "01273",
        "start": "2026-12-08T05:00:00",
        "rrule": "FREQ=DAILY",
        "targets": {"areas": ["01273"]},
        "items": [
            {"kind": "tts", "text": "Một"},
            {"kind": "silence", "seconds": 2},
            {"kind": "tts", "text": "Một"},
        ],
    }
    body.update(overrides)
    return ProgrammeSpec.model_validate(body)


def test_the_same_programme_has_no_changes() -> None:
    assert compare(spec(), ["a", "b"], spec(), ["b", "a"]).none


def test_items_are_matched_whole_and_counted_as_often_as_they_occur() -> None:
    now = spec(items=[{"kind": "tts", "text": "Một"}, {"kind": "tts", "text": "Hai"}])
    changes = compare(spec(), [], now, [])
    assert [(n, i.kind) for n, i in changes.items_added] == [(2, "tts")]
    assert [(n, i.kind) for n, i in changes.items_removed] == [(2, "silence"), (3, "tts")]
    assert changes.schedule is None and changes.title is None


def test_schedule_title_priority_and_stations_are_named() -> None:
    now = spec(start="2026-12-08T06:15:00", title="Tin sớm", priority="background")
    changes = compare(spec(), ["a", "b"], now, ["b", "c"])
    assert changes.schedule is not None and changes.schedule[1].start.hour == 6
    assert changes.title == ("Tin sáng", "Tin sớm")
    assert changes.priority == ("normal", "background")
    assert (changes.stations_added, changes.stations_removed) == (["c"], ["a"])
    assert not changes.targets_changed and not changes.none


def test_targets_written_differently_are_a_change_even_when_they_reach_the_same() -> None:
    now = spec(targets={"stations": ["a"]})
    changes = compare(spec(), ["a"], now, ["a"])
    assert changes.targets_changed and not changes.stations_added and not changes.none


def test_an_exception_day_moves_the_schedule() -> None:
    assert compare(spec(), [], spec(exceptions=["2026-12-25"]), []).schedule is not None
