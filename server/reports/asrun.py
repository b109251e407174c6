"""As-run truth: what each station was asked to play against what it says it played.

Pure logic: the caller loads planned items (``server.reports.planned``), station events
and stations from the database and passes ``now``; nothing here touches a clock, a
database or the web. That keeps the rules below testable to the millisecond.

Rules
-----
- An item belongs to the report when its *planned* start lies in ``[from_at, to_at)``.
  A withdrawn item (a later plan dropped it before its start) is not planned, unless
  the station played it anyway.
- Its outcome is the best one the station reported for that item id: ``played`` over
  ``interrupted`` over ``failed`` (a station may resend an event after a reconnect;
  duplicates count once).
- Without an outcome: ``pending`` until its planned end plus ``grace``, then
  ``missed`` — the bulletin that silently did not play, with the last thing the station
  did say about it (e.g. ``audio_failed``) as the reason.
- Played time is the station's own ``finished_at - started_at``; a ``played`` event
  without times counts the planned length, an ``interrupted`` one without times
  counts nothing. Requested time is the planned length of every planned item.
- An outcome for an item the server has no record of (plans published before the
  report existed) still counts, in ``unplanned``, when it happened in the window.
- Emergency items are alerts (distinct ``alert_id`` with an event in the window;
  played = ``alert_finished``) plus plan items of priority ``emergency``. Drills (the
  alert ids the caller names in ``drills``) are counted apart, never as emergencies: a
  province reports exercises separately from real warnings.
- Live sessions (``live_started`` / ``live_ended`` events, item id ``live-<session>``)
  are neither planned nor counted as items: each session a station took part in is one
  row of ``live`` — who spoke (the server's session record), when it first sounded
  there and how long it sounded, summed over its rounds (an alert or a pause silences
  it, frames bring it back). A round still open sounds until ``now``, or until the
  session's end on the server when the station never reported its end. A session that
  never sounded at a station (busy with an alert) is listed with 0 s and its reason. It
  belongs to the window when it first sounded (or was turned away) inside it.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from server.local_time import LOCAL_TZ
from server.reports.csv_words import headings, word

OUTCOMES = {"played": 3, "interrupted": 2, "failed": 1}
LIVE_KINDS = ("live_started", "live_ended")
LIVE_ITEM_PREFIX = "live-"
"""a live session's item id at the stations (``node_firmware.core.live.item_id_of``)"""
DEFAULT_GRACE = timedelta(minutes=2)


@dataclass(frozen=True)
class Planned:
    station_id: str
    item_id: str
    start_at: datetime
    length_ms: int
    priority: str = "normal"
    title: str = ""
    source: str = "audio"
    withdrawn: bool = False

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(milliseconds=self.length_ms)


@dataclass(frozen=True)
class Reported:
    """One station event, as stored (``StationEvent``)."""

    station_id: str
    kind: str
    at: datetime
    item_id: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    alert_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class StationInfo:
    station_id: str
    name: str = ""
    area_code: str = ""


@dataclass(frozen=True)
class LiveInfo:
    """A live session as the server recorded it (``LiveSession``): who went live."""

    session_id: str
    title: str = ""
    created_by: str = ""
    ended_at: datetime | None = None
    """when the server ended it (a round a station never closed counts up to here)"""


@dataclass(frozen=True)
class LiveOnStation:
    """One live session at one station: when and how long it sounded there."""

    station_id: str
    session_id: str
    title: str
    created_by: str
    started_at: datetime | None
    """when it first sounded here (None: never — the station was busy)"""
    finished_at: datetime | None
    """when it last went silent here (None: on air now, or never sounded)"""
    sounded_ms: int
    rounds: int
    """how many times it began to sound here"""
    reason: str | None
    """why it ended here last: stopped, silent, alert, max_length, busy, …"""
    on_air: bool = False


@dataclass(frozen=True)
class ItemOutcome:
    station_id: str
    item_id: str
    title: str
    priority: str
    source: str
    start_at: datetime | None
    length_ms: int
    outcome: str
    """played | interrupted | failed | missed | pending"""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    played_ms: int = 0
    reason: str | None = None
    planned: bool = True


@dataclass
class StationAsRun:
    station_id: str
    name: str = ""
    area_code: str = ""
    planned: int = 0
    played: int = 0
    interrupted: int = 0
    failed: int = 0
    missed: int = 0
    pending: int = 0
    unplanned: int = 0
    emergency: int = 0
    emergency_played: int = 0
    drills: int = 0
    drills_played: int = 0
    requested_ms: int = 0
    played_ms: int = 0
    live: int = 0
    """live sessions that sounded (or were turned away) here"""
    live_ms: int = 0
    """how long live sessions sounded here"""

    @property
    def played_pct(self) -> float | None:
        """Played time as a share of requested time; None when nothing was requested."""
        if self.requested_ms <= 0:
            return None
        return round(100.0 * self.played_ms / self.requested_ms, 1)

    def add(self, other: StationAsRun) -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


COUNTERS = (
    "planned", "played", "interrupted", "failed", "missed", "pending", "unplanned",
    "emergency", "emergency_played", "drills", "drills_played", "requested_ms", "played_ms",
    "live", "live_ms",
)  # fmt: skip


@dataclass
class AsRunReport:
    from_at: datetime
    to_at: datetime
    generated_at: datetime
    stations: list[StationAsRun]
    totals: StationAsRun
    items: list[ItemOutcome] = field(default_factory=list)
    live: list[LiveOnStation] = field(default_factory=list)


def _duration_ms(started: datetime | None, finished: datetime | None) -> int | None:
    if started is None or finished is None:
        return None
    return max(0, round((finished - started).total_seconds() * 1000))


def _best(events: Iterable[Reported]) -> Reported | None:
    """The outcome that counts: highest rank, then the latest report."""
    ranked = [e for e in events if e.kind in OUTCOMES]
    if not ranked:
        return None
    return max(ranked, key=lambda e: (OUTCOMES[e.kind], e.at))


def _played_ms(event: Reported, length_ms: int) -> int:
    measured = _duration_ms(event.started_at, event.finished_at)
    if measured is not None:
        return measured
    if event.kind == "played":
        return length_ms
    return 0


def build_report(
    stations: Iterable[StationInfo],
    planned: Iterable[Planned],
    events: Iterable[Reported],
    *,
    from_at: datetime,
    to_at: datetime,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
    drills: frozenset[str] = frozenset(),
    live_sessions: Iterable[LiveInfo] = (),
) -> AsRunReport:
    """Join planned items with station events into one row per station (see module doc).

    ``planned`` and ``events`` may hold rows of other stations or outside the window;
    they are filtered here, so the caller's queries can be coarse.
    """
    if to_at <= from_at:
        raise ValueError(f"the report window is empty: from {from_at} is not before to {to_at}")
    rows = {s.station_id: StationAsRun(s.station_id, s.name, s.area_code) for s in stations}
    by_item: dict[tuple[str, str], list[Reported]] = defaultdict(list)
    alerts: dict[tuple[str, str], set[str]] = defaultdict(set)
    live_events: dict[tuple[str, str], list[Reported]] = defaultdict(list)
    for event in events:
        if event.station_id not in rows:
            continue
        if event.kind in LIVE_KINDS and event.item_id:
            live_session = event.item_id.removeprefix(LIVE_ITEM_PREFIX)
            live_events[(event.station_id, live_session)].append(event)
        elif event.alert_id is not None:
            if from_at <= event.at < to_at:
                alerts[(event.station_id, event.alert_id)].add(event.kind)
        elif event.item_id is not None:
            by_item[(event.station_id, event.item_id)].append(event)

    items: list[ItemOutcome] = []
    known: set[tuple[str, str]] = set()
    for plan in sorted(planned, key=lambda p: (p.station_id, p.start_at, p.item_id)):
        row = rows.get(plan.station_id)
        key = (plan.station_id, plan.item_id)
        if row is None:
            continue
        known.add(key)
        if not from_at <= plan.start_at < to_at:
            continue
        reports = by_item.get(key, [])
        best = _best(reports)
        if plan.withdrawn and best is None:
            continue
        row.planned += 1
        row.requested_ms += plan.length_ms
        if plan.priority == "emergency":
            row.emergency += 1
        if best is not None:
            outcome, reason = best.kind, best.reason
            played_ms = _played_ms(best, plan.length_ms)
            if plan.priority == "emergency" and outcome == "played":
                row.emergency_played += 1
        else:
            played_ms = 0
            due = now >= plan.end_at + grace
            outcome = "missed" if due else "pending"
            last = max(reports, key=lambda e: e.at) if reports else None
            reason = (last.reason or last.kind) if last is not None and due else None
            if due and reason is None:
                reason = "no report from the station"
        setattr(row, outcome, getattr(row, outcome) + 1)
        row.played_ms += played_ms
        items.append(
            ItemOutcome(
                station_id=plan.station_id,
                item_id=plan.item_id,
                title=plan.title,
                priority=plan.priority,
                source=plan.source,
                start_at=plan.start_at,
                length_ms=plan.length_ms,
                outcome=outcome,
                started_at=best.started_at if best else None,
                finished_at=best.finished_at if best else None,
                played_ms=played_ms,
                reason=reason,
            )
        )

    for key, reports in sorted(by_item.items()):
        best = _best(reports)
        if key in known or best is None:
            continue
        when = best.started_at or best.at
        if not from_at <= when < to_at:
            continue
        row = rows[key[0]]
        played_ms = _played_ms(best, 0)
        row.unplanned += 1
        setattr(row, best.kind, getattr(row, best.kind) + 1)
        row.played_ms += played_ms
        items.append(
            ItemOutcome(
                station_id=key[0],
                item_id=key[1],
                title="",
                priority="",
                source="",
                start_at=None,
                length_ms=0,
                outcome=best.kind,
                started_at=best.started_at,
                finished_at=best.finished_at,
                played_ms=played_ms,
                reason=best.reason,
                planned=False,
            )
        )

    for (station_id, alert_id), kinds in alerts.items():
        finished = "alert_finished" in kinds
        if alert_id in drills:
            rows[station_id].drills += 1
            rows[station_id].drills_played += finished
        else:
            rows[station_id].emergency += 1
            rows[station_id].emergency_played += finished

    info = {s.session_id: s for s in live_sessions}
    live: list[LiveOnStation] = []
    for (station_id, session_id), reports in live_events.items():
        on_station = _live_on_station(station_id, info.get(session_id, LiveInfo(session_id)),
                                      reports, now)  # fmt: skip
        first = on_station.started_at or min(e.at for e in reports)
        if from_at <= first < to_at:
            live.append(on_station)
            rows[station_id].live += 1
            rows[station_id].live_ms += on_station.sounded_ms
    live.sort(key=lambda r: (r.started_at or r.finished_at or now, r.station_id))

    ordered = sorted(rows.values(), key=lambda r: (r.area_code, r.station_id))
    totals = StationAsRun("", "total")
    for row in ordered:
        totals.add(row)
    return AsRunReport(from_at, to_at, now, ordered, totals, items, live)


def _live_on_station(
    station_id: str, info: LiveInfo, reports: list[Reported], now: datetime
) -> LiveOnStation:
    """Sum a session's rounds at one station (a resent event counts once)."""
    rounds: dict[datetime, datetime | None] = {}  # round start -> its end (None: on air)
    reason: str | None = None
    last_end: Reported | None = None
    for event in sorted(reports, key=lambda e: (e.at, e.kind != "live_started")):
        start = event.started_at
        if event.kind == "live_started" and start is not None:
            rounds.setdefault(start, None)
        elif event.kind == "live_ended":
            if start is not None and event.finished_at is not None:
                rounds[start] = event.finished_at
            if last_end is None or event.at >= last_end.at:
                last_end, reason = event, event.reason
    until = min(now, info.ended_at) if info.ended_at is not None else now
    sounded = sum(
        _duration_ms(start, end or max(start, until)) or 0 for start, end in rounds.items()
    )
    open_rounds = [start for start, end in rounds.items() if end is None]
    ends = [end for end in rounds.values() if end is not None]
    return LiveOnStation(
        station_id=station_id,
        session_id=info.session_id,
        title=info.title,
        created_by=info.created_by,
        started_at=min(rounds) if rounds else None,
        finished_at=None if open_rounds or not ends else max(ends),
        sounded_ms=sounded,
        rounds=len(rounds),
        reason=None if open_rounds else reason,
        on_air=bool(open_rounds) and info.ended_at is None,
    )


CSV_COLUMNS = (
    "station_id", "station_name", "area_code", "planned", "played", "interrupted", "failed",
    "missed", "pending", "unplanned", "emergency", "emergency_played", "requested_s",
    "played_s", "played_pct", "drills", "drills_played", "live_sessions", "live_s",
)  # fmt: skip


def _csv_row(row: StationAsRun, lang: str | None = None) -> list[object]:
    pct = row.played_pct
    return [
        row.station_id, row.name if row.station_id else word(row.name, lang), row.area_code,
        row.planned, row.played, row.interrupted,
        row.failed, row.missed, row.pending, row.unplanned, row.emergency, row.emergency_played,
        f"{row.requested_ms / 1000:.1f}", f"{row.played_ms / 1000:.1f}",
        "" if pct is None else f"{pct:.1f}", row.drills, row.drills_played, row.live,
        f"{row.live_ms / 1000:.1f}",
    ]  # fmt: skip


def to_csv(report: AsRunReport, lang: str | None = None) -> str:
    """One line per station and a final total line; times in seconds (UTF-8, with header
    in ``lang``'s words, or the machine names without one)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(headings(CSV_COLUMNS, lang))
    for row in report.stations:
        writer.writerow(_csv_row(row))
    writer.writerow(_csv_row(report.totals, lang))
    return out.getvalue()


ITEM_CSV_COLUMNS = (
    "station_id", "item_id", "title", "priority", "source", "planned_start_local",
    "requested_s", "outcome", "started_local", "finished_local", "played_s", "reason",
)  # fmt: skip


def _local(moment: datetime | None) -> str:
    return moment.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def items_to_csv(report: AsRunReport, lang: str | None = None) -> str:
    """One line per item, times in Vietnam time: which bulletin played, when, or why not."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(headings(ITEM_CSV_COLUMNS, lang))
    for item in report.items:
        writer.writerow(
            [
                item.station_id, item.item_id, item.title, item.priority, item.source,
                _local(item.start_at), f"{item.length_ms / 1000:.1f}", word(item.outcome, lang),
                _local(item.started_at), _local(item.finished_at),
                f"{item.played_ms / 1000:.1f}", item.reason or "",
            ]
        )  # fmt: skip
    return out.getvalue()


LIVE_CSV_COLUMNS = (
    "station_id", "session_id", "title", "created_by", "started_local", "finished_local",
    "sounded_s", "rounds", "end_reason",
)  # fmt: skip


def live_to_csv(report: AsRunReport, lang: str | None = None) -> str:
    """One line per live session and station, times in Vietnam time: who spoke, how long
    it sounded there (``end_reason`` empty: on air now)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(headings(LIVE_CSV_COLUMNS, lang))
    for row in report.live:
        writer.writerow(
            [
                row.station_id, row.session_id, row.title, row.created_by,
                _local(row.started_at), _local(row.finished_at),
                f"{row.sounded_ms / 1000:.1f}", row.rounds, row.reason or "",
            ]
        )  # fmt: skip
    return out.getvalue()
