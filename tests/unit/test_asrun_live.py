"""Live sessions in the as-run report: one row per session and station, its rounds summed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.reports.asrun import (
    LiveInfo,
    Reported,
    StationInfo,
    build_report,
    live_to_csv,
    to_csv,
)

T0 = datetime(2026, 11, 10, 1, 0, tzinfo=UTC)  # 08:00 in Vietnam
S = timedelta(seconds=1)
SESSION = "0123456789abcdef"
ITEM = f"live-{SESSION}"
STATIONS = [StationInfo("st-a", "Loa A", "01273"), StationInfo("st-b", "Loa B", "01273")]
INFO = LiveInfo(SESSION, "Họp khẩn", "op")


def started(station: str, at: datetime) -> Reported:
    return Reported(station, "live_started", at, ITEM, started_at=at)


def ended(station: str, begun: datetime | None, at: datetime, reason: str) -> Reported:
    finished = at if begun is not None else None
    return Reported(station, "live_ended", at, ITEM, begun, finished, reason=reason)


def report(events: list[Reported], now: datetime = T0 + 3600 * S, info: LiveInfo = INFO):
    return build_report(
        STATIONS, [], events, from_at=T0 - 3600 * S, to_at=T0 + 3600 * S, now=now,
        live_sessions=[info],
    )  # fmt: skip


def test_rounds_are_summed_and_a_resent_event_counts_once() -> None:
    a_first = ended("st-a", T0, T0 + 40 * S, "alert")
    events = [
        started("st-a", T0), a_first, a_first,  # resent after a reconnect
        started("st-a", T0 + 70 * S), ended("st-a", T0 + 70 * S, T0 + 100 * S, "stopped"),
        started("st-b", T0 + S), ended("st-b", T0 + S, T0 + 100 * S, "stopped"),
    ]  # fmt: skip
    built = report(events)
    by_station = {r.station_id: r for r in built.live}
    a, b = by_station["st-a"], by_station["st-b"]
    assert (a.sounded_ms, a.rounds, a.reason, a.created_by) == (70_000, 2, "stopped", "op")
    assert (a.started_at, a.finished_at, a.on_air) == (T0, T0 + 100 * S, False)
    assert (b.sounded_ms, b.rounds) == (99_000, 1)
    rows = {r.station_id: r for r in built.stations}
    assert (rows["st-a"].live, rows["st-a"].live_ms) == (1, 70_000)
    assert (built.totals.live, built.totals.live_ms) == (2, 169_000)
    assert (rows["st-a"].planned, rows["st-a"].unplanned) == (0, 0)  # not an item
    header, line_a, *_ = to_csv(built).splitlines()
    assert header.endswith("live_sessions,live_s") and line_a.endswith(",1,70.0")
    live_csv = live_to_csv(built).splitlines()
    assert (
        live_csv[1]
        == f"st-a,{SESSION},Họp khẩn,op,2026-11-10 08:00:00,2026-11-10 08:01:40,70.0,2,stopped"
    )


def test_a_session_on_air_counts_until_now_and_a_busy_station_is_listed() -> None:
    now = T0 + 30 * S
    built = report([started("st-a", T0), ended("st-b", None, T0 + 2 * S, "busy")], now=now)
    a, b = sorted(built.live, key=lambda r: r.station_id)
    assert (a.on_air, a.sounded_ms, a.finished_at, a.reason) == (True, 30_000, None, None)
    assert (b.on_air, b.sounded_ms, b.started_at, b.rounds, b.reason) == (False, 0, None, 0, "busy")


def test_a_round_a_station_never_closed_ends_with_the_session() -> None:
    info = LiveInfo(SESSION, "", "op", ended_at=T0 + 20 * S)
    (a,) = report([started("st-a", T0)], now=T0 + 600 * S, info=info).live
    assert (a.sounded_ms, a.on_air) == (20_000, False)


def test_sessions_outside_the_window_are_left_out() -> None:
    late = T0 + 2 * 3600 * S
    built = report([started("st-a", late), ended("st-a", late, late + 10 * S, "stopped")])
    assert built.live == [] and built.totals.live == 0
