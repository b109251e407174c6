"""Broadcasts: schedule audio at an instant on stations, then watch each station's progress."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Session, col, select

from server.api.deps import ClockDep, DbId, PublisherDep, SessionDep
from server.areas import subtree_codes
from server.audit.log import record_audit
from server.auth.actor import Actor
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.permissions import CREATE_ACTION, Action
from server.db import append_rows
from server.models import (
    Area,
    AudioAsset,
    Broadcast,
    BroadcastCreate,
    BroadcastDetail,
    BroadcastPublic,
    BroadcastTarget,
    Station,
    TargetPublic,
    TargetState,
)

router = APIRouter(prefix="/broadcasts", tags=["broadcasts"])

LIST_MAX = 500
TARGET_COLUMNS = ("broadcast_id", "station_id", "state", "updated_at")


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _quoted(values: set[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values))


def resolve_targets(
    session: Session, station_ids: list[str], area_codes: list[str]
) -> dict[str, str]:
    """Each station named directly or in an area's subtree, with its own area.

    Every unknown id or code is an error naming it: a typo must not quietly shrink
    the audience of an announcement.
    """
    wanted_stations = set(station_ids)
    found: dict[str, str] = dict(
        session.exec(
            select(Station.id, Station.area_code).where(col(Station.id).in_(wanted_stations))
        ).all()
    )
    if wanted_stations - found.keys():
        unknown = wanted_stations - found.keys()
        raise _unprocessable(f"station_ids: unknown station(s) {_quoted(unknown)}")
    wanted_areas = set(area_codes)
    if wanted_areas:
        known_areas = set(
            session.exec(select(Area.code).where(col(Area.code).in_(wanted_areas))).all()
        )
        if wanted_areas - known_areas:
            unknown = wanted_areas - known_areas
            raise _unprocessable(f"area_codes: unknown area(s) {_quoted(unknown)}")
        codes = subtree_codes(session, wanted_areas)
        in_areas = select(Station.id, Station.area_code).where(col(Station.area_code).in_(codes))
        found.update(session.exec(in_areas).all())
    if not found:
        raise _unprocessable(
            f"area_codes: no station is registered in area(s) {_quoted(wanted_areas)}"
        )
    return found


def station_areas(session: Session, station_ids: set[str]) -> set[str]:
    rows = session.exec(select(Station.area_code).where(col(Station.id).in_(station_ids)))
    return set(rows.all())


def broadcast_detail(
    session: Session, broadcast: Broadcast, in_areas: set[str] | None = None
) -> BroadcastDetail:
    """The broadcast with its targets (only those in ``in_areas`` when given).

    A commune sees its own stations' part of a province-wide broadcast, and the
    counts are of what it sees.
    """
    query = select(BroadcastTarget).where(BroadcastTarget.broadcast_id == broadcast.id)
    if in_areas is not None:
        query = query.join(Station, col(Station.id) == col(BroadcastTarget.station_id)).where(
            col(Station.area_code).in_(in_areas)
        )
    targets = session.exec(query.order_by(col(BroadcastTarget.station_id))).all()
    tally = Counter(t.state for t in targets)
    return BroadcastDetail(
        **BroadcastPublic.model_validate(broadcast).model_dump(),
        targets=[TargetPublic.model_validate(t) for t in targets],
        counts={state.value: tally.get(state, 0) for state in TargetState},
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BroadcastDetail)
def create_broadcast(
    body: BroadcastCreate,
    session: SessionDep,
    publisher: PublisherDep,
    clock: ClockDep,
    actor: ActorDep,
) -> BroadcastDetail:
    """Schedule the audio and push a fresh signed plan to every targeted station.

    The caller needs the right in EVERY targeted station's area: ``broadcast.create``
    for normal and background bulletins, ``broadcast.create_priority`` for priority
    and live ones.
    """
    if body.priority not in CREATE_ACTION:
        raise _unprocessable(
            f"priority {body.priority.value!r} is for alerts, not broadcasts: an emergency "
            "goes out through the alert API (alert.send), which pre-empts everything"
        )
    now = clock()
    if body.start_at <= now:
        raise _unprocessable(
            f"start_at {body.start_at.isoformat()} is in the past (server time {now.isoformat()})"
        )
    if session.get(AudioAsset, body.audio_id) is None:
        raise _unprocessable(f"audio_id {body.audio_id} does not exist; upload it first")
    targets = resolve_targets(session, body.station_ids, body.area_codes)
    station_ids = set(targets)
    authorize(
        actor,
        CREATE_ACTION[body.priority],
        set(targets.values()),
        session,
        object_type="broadcast",
        object_id=f"({len(station_ids)} stations)",
    )

    broadcast = Broadcast(
        audio_id=body.audio_id,
        start_at=body.start_at,
        priority=body.priority,
        title=body.title,
        created_at=now,
    )
    session.add(broadcast)
    session.flush()
    assert broadcast.id is not None
    # One driver call, not an ORM object per station: this is on the way to the air.
    planned = TargetState.PLANNED.value
    append_rows(
        session.connection(),
        BroadcastTarget.__table__,  # type: ignore[attr-defined]
        TARGET_COLUMNS,
        [(broadcast.id, station_id, planned, now) for station_id in sorted(station_ids)],
    )
    record_audit(
        session,
        actor,
        "broadcast.create",
        "broadcast",
        str(broadcast.id),
        after={
            "title": body.title,
            "priority": body.priority,
            "start_at": body.start_at,
            "audio_id": body.audio_id,
            "station_count": len(station_ids),
            "stations": sorted(station_ids),
        },
    )
    # No commit here: the publisher commits the broadcast together with its plans and
    # publishes them right after that one commit (issue 17: a broadcast reaches its
    # stations in milliseconds, so nothing may stand between the commit and the publish).
    publisher.publish_stations(session, station_ids)
    session.refresh(broadcast)
    return broadcast_detail(session, broadcast)


def visible_broadcasts(session: Session, actor: Actor, limit: int) -> list[Broadcast]:
    """Newest first, those reaching at least one station in the caller's areas."""
    authorize(actor, Action.BROADCAST_READ, None, session)
    scope = visible_areas(actor, Action.BROADCAST_READ, session)
    reaching = (
        select(BroadcastTarget.broadcast_id)
        .join(Station, col(Station.id) == col(BroadcastTarget.station_id))
        .where(col(Station.area_code).in_(scope))
    )
    query = (
        select(Broadcast)
        .where(col(Broadcast.id).in_(reaching))
        .order_by(col(Broadcast.start_at).desc())
        .limit(limit)
    )
    return list(session.exec(query).all())


def visible_detail(session: Session, actor: Actor, broadcast_id: int) -> BroadcastDetail:
    """The caller's part of a broadcast; 403 when it reaches none of the caller's areas."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"broadcast {broadcast_id} does not exist")
    detail = broadcast_detail(
        session, broadcast, visible_areas(actor, Action.BROADCAST_READ, session)
    )
    if not detail.targets:
        # Not one target is visible, so the check over all of them fails, naming an area.
        targets = session.exec(
            select(BroadcastTarget.station_id).where(BroadcastTarget.broadcast_id == broadcast_id)
        ).all()
        authorize(actor, Action.BROADCAST_READ, station_areas(session, set(targets)), session)
    return detail


@router.get("", response_model=list[BroadcastPublic])
def read_broadcasts(session: SessionDep, actor: ActorDep, limit: int = 100) -> list[Broadcast]:
    """Newest first, those reaching at least one station in the caller's areas."""
    return visible_broadcasts(session, actor, max(1, min(limit, LIST_MAX)))


@router.get("/{broadcast_id}", response_model=BroadcastDetail)
def read_broadcast(broadcast_id: DbId, session: SessionDep, actor: ActorDep) -> BroadcastDetail:
    """The broadcast with each visible station's state and timestamps, and counts per state."""
    return visible_detail(session, actor, broadcast_id)
