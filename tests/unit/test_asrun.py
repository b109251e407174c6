"""As-run logic (pure) and the plan record it reads (real SQLite)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from loaxa_protocol import AudioRef, Plan, PlanItem, Priority, StreamRef
from server.db import create_tables, make_engine
from server.reports.asrun import (
    Planned,
    Reported,
    StationInfo,
    build_report,
    items_to_csv,
    to_csv,
)
from server.reports.planned import PlannedItem, record_plan, record_plans

T0 = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)  # 05:00 on 25/11 in Vietnam
DAY_END = T0 + timedelta(days=1)
A, B = StationInfo("st-a", "Cụm loa A", "01273"), StationInfo("st-b", "Cụm loa B", "01273")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def planned(station: str, item: str, start_s: float, length_ms: int, **kw: object) -> Planned:
    return Planned(station, item, at(start_s), length_ms, **kw)  # type: ignore[arg-type]


def outcome(
    station: str,
    kind: str,
    item: str,
    started_s: float | None,
    finished_s: float | None,
    **kw: object,
) -> Reported:
    finished = at(finished_s) if finished_s is not None else None
    started = at(started_s) if started_s is not None else None
    return Reported(
        station,
        kind,
        finished or started or T0,
        item,
        started,
        finished,
        **kw,  # type: ignore[arg-type]
    )


def report(plans: list[Planned], events: list[Reported], now_s: float = 3600, **kw: object):  # type: ignore[no-untyped-def]
    return build_report(
        [A, B],
        plans,
        events,
        from_at=T0,
        to_at=DAY_END,
        now=at(now_s),
        **kw,  # type: ignore[arg-type]
    )


def test_a_day_of_two_stations() -> None:
    plans = [
        planned("st-a", "b-1", 0, 60_000),
        planned("st-a", "b-2", 30, 10_000, priority="priority"),
        planned("st-a", "b-3", 600, 20_000),
        planned("st-b", "b-1", 0, 60_000),
        planned("st-b", "p-7", 7200, 30_000),  # later today
    ]
    events = [
        outcome("st-a", "playing", "b-1", 0, None),
        outcome("st-a", "interrupted", "b-1", 0, 30, reason="preempted"),
        outcome("st-a", "played", "b-2", 30, 40),
        outcome("st-a", "audio_failed", "b-3", None, None, reason="hash_mismatch"),
        outcome("st-b", "played", "b-1", 0.004, 60.004),
        outcome("st-b", "played", "b-1", 0.004, 60.004),  # resent after a reconnect
    ]
    result = report(plans, events)
    a, b = result.stations
    assert (a.planned, a.played, a.interrupted, a.failed, a.missed, a.pending) == (3, 1, 1, 0, 1, 0)
    assert a.requested_ms == 90_000 and a.played_ms == 40_000
    assert a.played_pct == pytest.approx(44.4)
    assert (b.planned, b.played, b.pending, b.missed) == (2, 1, 1, 0)
    assert b.played_ms == 60_000 and b.requested_ms == 90_000
    missed = next(i for i in result.items if i.outcome == "missed")
    assert (missed.item_id, missed.reason) == ("b-3", "hash_mismatch")
    assert result.totals.planned == 5 and result.totals.played_ms == 100_000


def test_pending_becomes_missed_only_after_the_end_and_the_grace() -> None:
    plans = [planned("st-a", "b-1", 0, 60_000)]
    grace = timedelta(minutes=2)
    assert report(plans, [], now_s=30, grace=grace).stations[0].pending == 1
    assert report(plans, [], now_s=60 + 119, grace=grace).stations[0].pending == 1
    late = report(plans, [], now_s=60 + 120, grace=grace)
    assert late.stations[0].missed == 1
    assert late.items[0].reason == "no report from the station"


def test_the_best_outcome_counts_once() -> None:
    plans = [planned("st-a", "b-1", 0, 5_000)]
    events = [
        outcome("st-a", "failed", "b-1", None, None, reason="player_error"),
        outcome("st-a", "played", "b-1", 1, 6),
        outcome("st-a", "interrupted", "b-1", 1, 3),
    ]
    row = report(plans, events).stations[0]
    assert (row.played, row.failed, row.interrupted, row.played_ms) == (1, 0, 0, 5_000)


def test_outcomes_without_times() -> None:
    plans = [planned("st-a", "b-1", 0, 5_000), planned("st-a", "b-2", 60, 7_000)]
    events = [
        Reported("st-a", "played", at(5), "b-1"),
        Reported("st-a", "interrupted", at(62), "b-2"),
    ]
    row = report(plans, events).stations[0]
    assert row.played_ms == 5_000  # a played item without times counts its planned length


def test_the_window_is_by_planned_start_and_half_open() -> None:
    plans = [
        planned("st-a", "early", -1, 60_000),  # 04:59:59 — yesterday's report
        planned("st-a", "first", 0, 1_000),
        planned("st-a", "last", 86_399.999, 1_000),
        planned("st-a", "next-day", 86_400, 1_000),
    ]
    events = [outcome("st-a", "played", "early", -1, 59)]  # played inside the window
    result = report(plans, events, now_s=90_000)
    assert [i.item_id for i in result.items] == ["first", "last"]
    assert result.stations[0].unplanned == 0  # "early" is known: it is not unplanned


def test_withdrawn_items_do_not_count_unless_played() -> None:
    plans = [
        planned("st-a", "b-1", 100, 5_000, withdrawn=True),
        planned("st-a", "b-2", 200, 5_000, withdrawn=True),
    ]
    events = [outcome("st-a", "played", "b-2", 200, 205)]
    row = report(plans, events).stations[0]
    assert (row.planned, row.played, row.missed) == (1, 1, 0)


def test_outcomes_of_items_without_a_plan_record_are_unplanned() -> None:
    events = [
        outcome("st-a", "played", "b-99", 10, 20),
        outcome("st-a", "played", "b-98", -100, -90),  # before the window
        outcome("st-c", "played", "b-1", 10, 20),  # a station not in the report
    ]
    result = report([], events)
    row = result.stations[0]
    assert (row.unplanned, row.played, row.planned, row.played_ms) == (1, 1, 0, 10_000)
    assert [i.item_id for i in result.items] == ["b-99"] and not result.items[0].planned


def test_emergency_items_are_alerts_and_emergency_plan_items() -> None:
    plans = [planned("st-b", "e-1", 0, 3_000, priority="emergency")]
    events = [
        Reported("st-a", "alert_received", at(5), alert_id="al-1"),
        Reported("st-a", "alert_playing", at(6), alert_id="al-1"),
        Reported("st-a", "alert_finished", at(20), alert_id="al-1"),
        Reported("st-a", "alert_received", at(50), alert_id="al-2"),
        Reported("st-a", "alert_cancelled", at(51), alert_id="al-2"),
        Reported("st-a", "alert_finished", at(-50), alert_id="al-0"),  # outside the window
        outcome("st-b", "played", "e-1", 0, 3),
    ]
    a, b = report(plans, events).stations
    assert (a.emergency, a.emergency_played, a.planned) == (2, 1, 0)
    assert (b.emergency, b.emergency_played, b.planned) == (1, 1, 1)


def test_drills_are_counted_apart_from_emergencies() -> None:
    events = [
        Reported("st-a", "alert_received", at(5), alert_id="al-real"),
        Reported("st-a", "alert_finished", at(20), alert_id="al-real"),
        Reported("st-a", "alert_received", at(50), alert_id="al-drill"),
        Reported("st-a", "alert_finished", at(70), alert_id="al-drill"),
        Reported("st-b", "alert_received", at(50), alert_id="al-drill"),
    ]
    a, b = report([], events, drills=frozenset({"al-drill"})).stations
    assert (a.emergency, a.emergency_played, a.drills, a.drills_played) == (1, 1, 1, 1)
    assert (b.emergency, b.drills, b.drills_played) == (0, 1, 0)


def test_an_empty_window_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="window is empty"):
        build_report([A], [], [], from_at=T0, to_at=T0, now=T0)


def test_csv_has_one_line_per_station_and_a_total() -> None:
    plans = [planned("st-a", "b-1", 0, 60_000), planned("st-b", "b-1", 0, 60_000)]
    events = [outcome("st-a", "played", "b-1", 0, 59.5)]
    lines = list(csv.DictReader(io.StringIO(to_csv(report(plans, events)))))
    assert [line["station_id"] for line in lines] == ["st-a", "st-b", ""]
    assert lines[0]["station_name"] == "Cụm loa A"
    assert (lines[0]["played_s"], lines[0]["requested_s"], lines[0]["played_pct"]) == (
        "59.5",
        "60.0",
        "99.2",
    )
    assert lines[1]["played_pct"] == "0.0"
    assert lines[2]["station_name"] == "total" and lines[2]["planned"] == "2"


def test_item_csv_is_in_vietnam_time_and_says_why() -> None:
    plans = [
        planned("st-a", "b-1", 0, 60_000, title="Bản tin sáng"),
        planned("st-b", "b-1", 0, 60_000),
    ]
    events = [outcome("st-a", "interrupted", "b-1", 0.5, 30, reason="preempted")]
    lines = list(csv.DictReader(io.StringIO(items_to_csv(report(plans, events)))))
    assert lines[0]["planned_start_local"] == "2026-11-25 05:00:00"
    assert (lines[0]["outcome"], lines[0]["played_s"], lines[0]["reason"]) == (
        "interrupted",
        "29.5",
        "preempted",
    )
    assert (
        lines[0]["started_local"] == "2026-11-25 05:00:00" and lines[0]["title"] == "Bản tin sáng"
    )
    assert (lines[1]["outcome"], lines[1]["reason"]) == ("missed", "no report from the station")


def test_the_as_run_logic_is_pure() -> None:
    code = (
        "import sys, server.reports.asrun; "
        "print(sorted(m for m in ('fastapi','sqlmodel','sqlalchemy','paho') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------ record_plan


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'loaxa.db'}")
    create_tables(engine)
    yield engine
    engine.dispose()


def audio(n: int, duration_ms: int = 4_000) -> AudioRef:
    return AudioRef(sha256=f"{n:064x}", size_bytes=1000, duration_ms=duration_ms, url="http://x/a")


def plan(seq: int, issued: datetime, *items: PlanItem) -> Plan:
    return Plan(
        sender="server",
        seq=seq,
        issued_at=issued,
        expires_at=issued + timedelta(hours=72),
        to="st-a",
        station_id="st-a",
        horizon_until=issued + timedelta(hours=48),
        items=list(items),
    )


def rows(engine: Engine) -> dict[str, PlannedItem]:
    with Session(engine) as session:
        return {r.item_id: r for r in session.exec(select(PlannedItem)).all()}


def test_record_plan_keeps_every_item_and_withdraws_dropped_future_ones(db: Engine) -> None:
    news = PlanItem(item_id="b-1", title="Bản tin sáng", start_at=at(600), audio=audio(1))
    relay = PlanItem(
        item_id="p-3-0500",
        title="Tiếp sóng VOV1",
        start_at=at(3600),
        priority=Priority.BACKGROUND,
        stream=StreamRef(url="http://vov.example/vov1", fallback=audio(2)),
        window_ms=1_800_000,
    )
    urgent = PlanItem(
        item_id="b-2", start_at=at(1200), priority=Priority.PRIORITY, audio=audio(3, 9_000)
    )
    with Session(db) as session:
        record_plan(session, plan(10, T0, news, relay, urgent), now=T0)
        session.commit()
    found = rows(db)
    assert set(found) == {"b-1", "p-3-0500", "b-2"}
    assert (found["p-3-0500"].source, found["p-3-0500"].length_ms) == ("stream", 1_800_000)
    assert found["p-3-0500"].sha256 == f"{2:064x}" and found["p-3-0500"].priority == "background"
    assert (found["b-2"].length_ms, found["b-1"].title) == (9_000, "Bản tin sáng")

    # 11: the news moved ten minutes later, the urgent item was cancelled; the relay is
    # unchanged. 12: an older plan arrives late and must not undo any of it.
    moved = news.model_copy(update={"start_at": at(1200)})
    with Session(db) as session:
        record_plan(session, plan(11, at(60), moved, relay), now=at(60))
        record_plan(session, plan(9, at(30), news, relay, urgent), now=at(61))
        session.commit()
    found = rows(db)
    assert found["b-1"].start_at == at(1200) and found["b-1"].last_plan_seq == 11
    assert found["b-2"].withdrawn_at == at(60)
    assert found["p-3-0500"].last_plan_seq == 10  # unchanged rows are not rewritten
    assert found["b-1"].first_plan_seq == 10

    # After the news has aired, a new plan no longer carries it: it stays planned.
    with Session(db) as session:
        record_plan(session, plan(13, at(1500), relay), now=at(1500))
        session.commit()
    found = rows(db)
    assert found["b-1"].withdrawn_at is None
    # A later plan bringing the cancelled item back makes it planned again.
    with Session(db) as session:
        record_plan(session, plan(14, at(1000), urgent, relay), now=at(1000))
        session.commit()
    assert rows(db)["b-2"].withdrawn_at is None


def test_record_plans_in_chunks_for_many_stations(db: Engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("server.reports.planned._MAX_PARAMS", 10)  # 3 plans per query

    def plans(seq: int, issued: datetime, items: int) -> list[Plan]:
        return [
            plan(seq + n, issued, *(
                PlanItem(item_id=f"b-{k}", start_at=at(600 + 60 * k), audio=audio(k))
                for k in range(items)
            )).model_copy(update={"station_id": f"st-{n}", "to": f"st-{n}"})
            for n in range(30)
        ]  # fmt: skip

    with Session(db) as session:
        record_plans(session, plans(100, T0, 3), now=T0)
        session.commit()
    with Session(db) as session:
        found = session.exec(select(PlannedItem)).all()
    assert len(found) == 90 and {r.station_id for r in found} == {f"st-{n}" for n in range(30)}

    with Session(db) as session:  # the hourly republish: nothing changed, nothing written
        record_plans(session, plans(200, at(60), 3), now=at(60))
        session.commit()
        assert {r.updated_at for r in session.exec(select(PlannedItem)).all()} == {T0}
    with Session(db) as session:  # every station's third item was cancelled
        record_plans(session, plans(300, at(120), 2), now=at(120))
        session.commit()
        withdrawn = session.exec(
            select(PlannedItem).where(col(PlannedItem.withdrawn_at).is_not(None))
        ).all()
    assert {(r.item_id, r.withdrawn_at) for r in withdrawn} == {("b-2", at(120))}
    assert len(withdrawn) == 30
