"""Broadcasts: schedule audio at an instant on stations, then watch each station's progress."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, HTTPException, status
from sqlmodel import Session, col, select

from server.api.deps import ClockDep, PublisherDep, SessionDep
from server.areas import subtree_codes
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


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


def _quoted(values: set[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values))


def resolve_targets(session: Session, station_ids: list[str], area_codes: list[str]) -> set[str]:
    """The stations named directly plus every station in each area's subtree.

    Every unknown id or code is an error naming it: a typo must not quietly shrink
    the audience of an announcement.
    """
    wanted_stations = set(station_ids)
    known = set(session.exec(select(Station.id).where(col(Station.id).in_(wanted_stations))).all())
    if wanted_stations - known:
        raise _unprocessable(f"station_ids: unknown station(s) {_quoted(wanted_stations - known)}")
    wanted_areas = set(area_codes)
    known_areas = set(session.exec(select(Area.code).where(col(Area.code).in_(wanted_areas))).all())
    if wanted_areas - known_areas:
        raise _unprocessable(f"area_codes: unknown area(s) {_quoted(wanted_areas - known_areas)}")
    found = set(known)
    if wanted_areas:
        codes = subtree_codes(session, wanted_areas)
        in_areas = select(Station.id).where(col(Station.area_code).in_(codes))
        found |= set(session.exec(in_areas).all())
    if not found:
        raise _unprocessable(
            f"area_codes: no station is registered in area(s) {_quoted(wanted_areas)}"
        )
    return found


def broadcast_detail(session: Session, broadcast: Broadcast) -> BroadcastDetail:
    targets = session.exec(
        select(BroadcastTarget)
        .where(BroadcastTarget.broadcast_id == broadcast.id)
        .order_by(col(BroadcastTarget.station_id))
    ).all()
    tally = Counter(t.state for t in targets)
    return BroadcastDetail(
        **BroadcastPublic.model_validate(broadcast).model_dump(),
        targets=[TargetPublic.model_validate(t) for t in targets],
        counts={state.value: tally.get(state, 0) for state in TargetState},
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BroadcastDetail)
def create_broadcast(
    body: BroadcastCreate, session: SessionDep, publisher: PublisherDep, clock: ClockDep
) -> BroadcastDetail:
    """Schedule the audio and push a fresh signed plan to every targeted station."""
    now = clock()
    if body.start_at <= now:
        raise _unprocessable(
            f"start_at {body.start_at.isoformat()} is in the past (server time {now.isoformat()})"
        )
    if session.get(AudioAsset, body.audio_id) is None:
        raise _unprocessable(f"audio_id {body.audio_id} does not exist; upload it first")
    station_ids = resolve_targets(session, body.station_ids, body.area_codes)

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
    for station_id in sorted(station_ids):
        session.add(
            BroadcastTarget(broadcast_id=broadcast.id, station_id=station_id, updated_at=now)
        )
    session.commit()
    publisher.publish_stations(session, station_ids)
    session.refresh(broadcast)
    return broadcast_detail(session, broadcast)


@router.get("", response_model=list[BroadcastPublic])
def read_broadcasts(session: SessionDep, limit: int = 100) -> list[Broadcast]:
    """Newest first."""
    limit = max(1, min(limit, LIST_MAX))
    query = select(Broadcast).order_by(col(Broadcast.start_at).desc()).limit(limit)
    return list(session.exec(query).all())


@router.get("/{broadcast_id}", response_model=BroadcastDetail)
def read_broadcast(broadcast_id: int, session: SessionDep) -> BroadcastDetail:
    """The broadcast with every station's state and timestamps, and counts per state."""
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"broadcast {broadcast_id} does not exist")
    return broadcast_detail(session, broadcast)
