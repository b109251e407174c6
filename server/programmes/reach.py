"""Live targets: which stations a saved programme reaches, kept true as the fleet changes.

A programme's area and group targets are resolved again when a station is registered,
when a group's members change and when the programme is approved, so a programme for a
commune reaches the station registered there tomorrow. Taking a station in must not
silently break the no-overlap rule the save enforced: programmes newly reaching a
station are taken in oldest approval first (approved, then submitted, then drafts), and
one that would clash at the same priority with a programme already there is *held* on
that station instead (``ProgrammeHold``: it does not play there), with the clash message
kept, logged, written to the audit log and shown on the programme. A hold is retried
whenever the station's targets are resolved again (e.g. the programme in the way is
archived), and a save of the programme re-checks every station strictly (409).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, delete, select

from server.areas import ancestry
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.models import Station
from server.programmes.approval import OCCUPYING, ON_AIR, ProgrammeState
from server.programmes.models import (
    Programme,
    ProgrammeHold,
    ProgrammeStation,
    StationGroup,
    StationGroupMember,
)
from server.programmes.service import (
    ProgrammeError,
    check_overlaps,
    resolve_targets,
    segments_of,
)
from server.programmes.spec import ProgrammeSpec

log = logging.getLogger(__name__)


def _seniority(programme: Programme) -> tuple[int, datetime, int]:
    """Who keeps a contested slot: approved first (earliest approval), then submitted,
    then drafts (oldest first)."""
    rank = {ProgrammeState.APPROVED: 0, ProgrammeState.SUBMITTED: 1}.get(programme.state, 2)
    when = programme.state_at if rank < 2 else programme.created_at
    return rank, when, programme.id or 0


def _clash(session: Session, programme: Programme, station_id: str, now: datetime) -> str | None:
    """The clash taking ``station_id`` in would cause, or None."""
    if programme.proposal or programme.state not in OCCUPYING:
        return None
    spec = ProgrammeSpec.model_validate(programme.spec)
    try:
        check_overlaps(
            session,
            programme.id,
            spec,
            segments_of(session, spec, programme.rendered),
            {station_id},
            now,
        )
    except ProgrammeError as exc:
        return str(exc)
    return None


def _relevant(
    session: Session, programmes: list[Programme], station_ids: set[str]
) -> list[Programme]:
    """The programmes whose targets could name one of ``station_ids`` (no resolution yet)."""
    areas: set[str] = set()
    for area_code in set(
        session.exec(select(Station.area_code).where(col(Station.id).in_(station_ids))).all()
    ):
        areas.update(ancestry(session, area_code))
    groups = set(
        session.exec(
            select(StationGroup.name)
            .join(StationGroupMember, col(StationGroupMember.group_id) == col(StationGroup.id))
            .where(col(StationGroupMember.station_id).in_(station_ids))
        ).all()
    )
    attached = set(
        session.exec(
            select(ProgrammeStation.programme_id).where(
                col(ProgrammeStation.station_id).in_(station_ids)
            )
        ).all()
    )
    found = []
    for programme in programmes:
        targets = programme.spec.get("targets", {})
        if (
            programme.id in attached
            or station_ids & set(targets.get("stations", []))
            or groups & set(targets.get("groups", []))
            or areas & set(targets.get("areas", []))
        ):
            found.append(programme)
    return found


def settle_reach(
    session: Session,
    now: datetime,
    *,
    programmes: Iterable[Programme] | None = None,
    station_ids: Iterable[str] | None = None,
    actor: Actor | None = None,
) -> set[str]:
    """Resolve targets again and bring ``ProgrammeStation`` up to date; does not commit.

    ``programmes`` (default: every one not archived) limits which programmes are looked
    at, ``station_ids`` which stations. Stations no longer reached are let go, newly
    reached ones taken in or held (see the module doc), held ones retried. Returns the
    stations whose on-air programmes changed: their plans must be republished.
    """
    stations = set(station_ids) if station_ids is not None else None
    if programmes is None:
        candidates = list(
            session.exec(
                select(Programme)
                .where(col(Programme.state) != ProgrammeState.ARCHIVED)
                .order_by(col(Programme.id))
            ).all()
        )
    else:
        candidates = [p for p in programmes if p.state != ProgrammeState.ARCHIVED]
    if stations is not None:
        candidates = _relevant(session, candidates, stations)
    if not candidates:
        return set()
    ids = [p.id for p in candidates]
    attached: dict[int, set[str]] = defaultdict(set)
    for programme_id, station_id in session.exec(
        select(ProgrammeStation.programme_id, ProgrammeStation.station_id).where(
            col(ProgrammeStation.programme_id).in_(ids)
        )
    ).all():
        attached[programme_id].add(station_id)
    holds: dict[tuple[int, str], ProgrammeHold] = {
        (h.programme_id, h.station_id): h
        for h in session.exec(
            select(ProgrammeHold).where(col(ProgrammeHold.programme_id).in_(ids))
        ).all()
    }
    changed: set[str] = set()
    wanted: dict[str, list[Programme]] = defaultdict(list)
    for programme in candidates:
        assert programme.id is not None
        spec = ProgrammeSpec.model_validate(programme.spec)
        reach = resolve_targets(session, spec, strict=False).stations
        mine = attached[programme.id]
        if stations is not None:
            reach &= stations
            mine = mine & stations
        for station_id in sorted(mine - reach):
            session.exec(
                delete(ProgrammeStation)
                .where(col(ProgrammeStation.programme_id) == programme.id)
                .where(col(ProgrammeStation.station_id) == station_id)
            )
            if programme.state in ON_AIR and not programme.proposal:
                changed.add(station_id)
        for (programme_id, station_id), stale in list(holds.items()):
            if (
                programme_id == programme.id
                and station_id not in reach
                and (stations is None or station_id in stations)
            ):
                session.delete(stale)
                del holds[(programme_id, station_id)]
        for station_id in reach - mine:
            wanted[station_id].append(programme)
    session.flush()
    for station_id in sorted(wanted):
        for programme in sorted(wanted[station_id], key=_seniority):
            assert programme.id is not None
            reason = _clash(session, programme, station_id, now)
            hold = holds.get((programme.id, station_id))
            if reason is None:
                if hold is not None:
                    session.delete(hold)
                session.add(ProgrammeStation(programme_id=programme.id, station_id=station_id))
                session.flush()
                if programme.state in ON_AIR and not programme.proposal:
                    changed.add(station_id)
                continue
            if hold is not None and hold.reason == reason:
                continue
            if hold is None:
                hold = ProgrammeHold(
                    programme_id=programme.id, station_id=station_id, reason=reason, since=now
                )
                log.warning(
                    "programme %s (%s) is held on station %s: %s",
                    programme.id,
                    programme.key,
                    station_id,
                    reason,
                )
                if actor is not None:
                    record_audit(
                        session,
                        actor,
                        "programme.hold",
                        "programme",
                        str(programme.id),
                        after={"station_id": station_id, "reason": reason},
                    )
            hold.reason = reason[:1000]
            holds[(programme.id, station_id)] = hold
            session.add(hold)
            session.flush()
    return changed


def clear_holds(session: Session, programme_id: int) -> None:
    """A strict save re-checked every station: nothing of this programme is held any more."""
    session.exec(delete(ProgrammeHold).where(col(ProgrammeHold.programme_id) == programme_id))


def holds_of(session: Session, programme_id: int) -> list[ProgrammeHold]:
    return list(
        session.exec(
            select(ProgrammeHold)
            .where(ProgrammeHold.programme_id == programme_id)
            .order_by(col(ProgrammeHold.station_id))
        ).all()
    )


def retry_holds(session: Session, station_ids: Iterable[str], now: datetime) -> set[str]:
    """Slots freed on these stations (a programme archived, moved, rejected): held
    programmes there get another chance. Returns stations whose on-air programmes changed."""
    wanted = set(station_ids)
    if not wanted:
        return set()
    held = set(
        session.exec(
            select(ProgrammeHold.station_id).where(col(ProgrammeHold.station_id).in_(wanted))
        ).all()
    )
    if not held:
        return set()
    return settle_reach(session, now, station_ids=held)


def reach_new_station(
    session: Session, station_id: str, now: datetime, actor: Actor | None = None
) -> set[str]:
    """A station was just registered: every programme whose targets reach it takes it in
    (or is held, see the module doc). Commits; returns the stations to republish."""
    changed = settle_reach(session, now, station_ids=[station_id], actor=actor)
    session.commit()
    return changed
