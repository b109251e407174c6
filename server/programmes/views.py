"""Reading programmes: lists, one programme with its stations and next times, occurrences.

What the API answers and the pages show comes from here, so both say the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlmodel import Session, col, select

from server.auth.actor import Actor
from server.auth.deps import visible_areas
from server.auth.permissions import Action
from server.models import Station, StationEvent
from server.programmes.access import check_visible, get_programme, permit
from server.programmes.approval import ProgrammeState
from server.programmes.models import (
    HeldStation,
    OccurrencePublic,
    Programme,
    ProgrammeDetail,
    ProgrammePublic,
    ProgrammeStation,
    Timeline,
)
from server.programmes.reach import holds_of
from server.programmes.recurrence import fmt_local, to_local
from server.programmes.service import ProgrammeError, station_timeline, stations_of, timing_of
from server.programmes.spec import ProgrammeSpec
from server.programmes.timeline import occurrence_stamp, programme_item_of

LIST_MAX = 500
OUTCOMES = ("played", "interrupted", "failed", "stream_unreachable")


def next_occurrences(spec: ProgrammeSpec, now: datetime, count: int = 5) -> list[datetime]:
    found: list[datetime] = []
    timing = timing_of(spec)
    after = now
    while len(found) < count:
        nxt = timing.next_after(after)
        if nxt is None:
            break
        found.append(nxt)
        after = nxt + timedelta(seconds=1)
    return found


def detail(
    session: Session,
    programme: Programme,
    now: datetime,
    warnings: Iterable[str] = (),
    changed: bool = True,
) -> ProgrammeDetail:
    assert programme.id is not None
    spec = ProgrammeSpec.model_validate(programme.spec)
    held = [
        HeldStation(station_id=h.station_id, reason=h.reason, since=h.since)
        for h in holds_of(session, programme.id)
    ]
    return ProgrammeDetail(
        **ProgrammePublic.model_validate(programme).model_dump(),
        stations=sorted(stations_of(session, programme.id)),
        held=held,
        next_occurrences=next_occurrences(spec, now),
        warnings=list(warnings),
        changed=changed,
    )


def list_programmes(
    session: Session,
    actor: Actor,
    key: str | None = None,
    state: ProgrammeState | None = None,
    proposals: bool | None = None,
    limit: int = 200,
) -> list[Programme]:
    """Programmes owned in, or reaching a station in, the caller's areas (newest first)."""
    permit(actor, Action.BROADCAST_READ, None, session)
    scope = visible_areas(actor, Action.BROADCAST_READ, session)
    reaching = (
        select(ProgrammeStation.programme_id)
        .join(Station, col(Station.id) == col(ProgrammeStation.station_id))
        .where(col(Station.area_code).in_(scope))
    )
    query = select(Programme).where(
        col(Programme.area_code).in_(scope) | col(Programme.id).in_(reaching)
    )
    if key is not None:
        query = query.where(Programme.key == key)
    if state is not None:
        query = query.where(col(Programme.state) == state)
    if proposals is not None:
        query = query.where(col(Programme.proposal).is_(proposals))
    query = query.order_by(col(Programme.id).desc()).limit(max(1, min(limit, LIST_MAX)))
    return list(session.exec(query).all())


def occurrences(
    session: Session, actor: Actor, programme_id: int, begin: datetime, days: int
) -> list[OccurrencePublic]:
    """Occurrences from ``begin`` for ``days`` days, local and UTC, with what stations said."""
    programme = get_programme(session, programme_id)
    check_visible(session, actor, programme)
    if begin.tzinfo is None:
        raise ProgrammeError("from: give an offset, e.g. 2026-12-07T00:00+07:00")
    spec = ProgrammeSpec.model_validate(programme.spec)
    length = timedelta(milliseconds=programme.duration_ms)
    starts = timing_of(spec).between(begin, begin + timedelta(days=days), 1000)
    outcomes = occurrence_outcomes(session, programme_id, starts) if starts else {}
    return [
        OccurrencePublic(
            start_at=t,
            end_at=t + length,
            start_local=fmt_local(t),
            end_local=fmt_local(t + length),
            outcomes=outcomes.get(t, {}),
        )
        for t in starts
    ]


def occurrence_outcomes(
    session: Session, programme_id: int, starts: list[datetime]
) -> dict[datetime, dict[str, int]]:
    """What the stations reported for each occurrence's items (from the event log)."""
    by_stamp = {occurrence_stamp(start): start for start in starts}
    rows = session.exec(
        select(StationEvent.item_id, StationEvent.kind)
        .where(col(StationEvent.item_id).startswith(f"p{programme_id}."))
        .where(col(StationEvent.kind).in_(OUTCOMES))
        .where(col(StationEvent.at) >= starts[0] - timedelta(days=1))
    ).all()
    found: dict[datetime, dict[str, int]] = {}
    for item_id, kind in rows:
        ref = programme_item_of(item_id or "")
        if ref is None or ref.programme_id != programme_id or ref.local_stamp not in by_stamp:
            continue
        tally = found.setdefault(by_stamp[ref.local_stamp], {})
        tally[kind] = tally.get(kind, 0) + 1
    return found


def played_out(programme: Programme, now: datetime) -> datetime | None:
    """The start of an approved programme's last occurrence when it will never play again
    (a one-off that has aired, a series that has ended); None otherwise.

    Occurrences before the programme was created never aired, so they do not count.
    """
    if programme.state != ProgrammeState.APPROVED:
        return None
    spec = ProgrammeSpec.model_validate(programme.spec)
    timing = timing_of(spec)
    length = timedelta(milliseconds=programme.duration_ms)
    if timing.next_after(now - length) is not None:
        return None  # still to come, or playing now
    aired = [t for t in timing.between(programme.created_at, now, 1000) if t + length <= now]
    return aired[-1] if aired else None


@dataclass(frozen=True)
class LastAiring:
    """The last occurrence of a programme that will not play again, and what stations said."""

    at: datetime
    outcomes: dict[str, int]

    @property
    def played(self) -> bool:
        return self.outcomes.get("played", 0) > 0


def last_airing(session: Session, programme: Programme, now: datetime) -> LastAiring | None:
    """See :func:`played_out`; with the stations' reports of that occurrence."""
    at = played_out(programme, now)
    if at is None or programme.id is None:
        return None
    return LastAiring(at, occurrence_outcomes(session, programme.id, [at]).get(at, {}))


def since_creation(programme: Programme, starts: Iterable[datetime]) -> list[datetime]:
    """The starts at or after the programme was created: earlier ones never existed (a
    daily 05:30 programme written at 11:00 first plays tomorrow)."""
    return [t for t in starts if t >= programme.created_at]


def timeline(
    session: Session, actor: Actor, station_id: str, day: date | None, now: datetime
) -> Timeline:
    """What the station plays on a local day (default today), drafts marked off-air."""
    station = session.get(Station, station_id)
    if station is None:
        raise ProgrammeError(f"station {station_id!r} does not exist", 404)
    permit(actor, Action.STATION_READ, [station.area_code], session)
    wanted = day or to_local(now).date()
    return Timeline(
        station_id=station_id,
        date=wanted.isoformat(),
        entries=station_timeline(session, station_id, wanted),
    )
