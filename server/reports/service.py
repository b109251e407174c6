"""Load an as-run report from the database: the one query path for the API and the pages."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import HTTPException, status
from sqlmodel import Session, col, select

from server.alerts.models import AlertRecord
from server.areas import subtree_codes
from server.auth.actor import Actor
from server.auth.deps import authorize, visible_areas
from server.auth.permissions import Action
from server.live.models import LiveSession
from server.models import Area, Station, StationEvent
from server.reports.asrun import (
    DEFAULT_GRACE,
    LIVE_ITEM_PREFIX,
    LIVE_KINDS,
    AsRunReport,
    LiveInfo,
    Planned,
    Reported,
    StationInfo,
    build_report,
)
from server.reports.planned import PlannedItem

MAX_WINDOW = timedelta(days=93)  # a quarter: the longest period one report covers
SLACK = timedelta(days=1)  # events and plans just outside the window that still belong to it
ITEM_KINDS = ("played", "interrupted", "failed", "playing", "audio_failed", "stream_unreachable")


def report_scope(session: Session, actor: Actor, area: str | None) -> set[str]:
    """The area codes a report for ``area`` covers (default: all ``actor`` may read);
    404 for an unknown area, 403 for one outside the actor's broadcast-read grants."""
    if area is None:
        authorize(actor, Action.BROADCAST_READ, None, session)
        return visible_areas(actor, Action.BROADCAST_READ, session)
    if session.get(Area, area) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"area: {area!r} does not exist")
    authorize(actor, Action.BROADCAST_READ, [area], session)
    return subtree_codes(session, [area])


def load_report(
    session: Session,
    area_codes: set[str],
    from_at: datetime,
    to_at: datetime,
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> AsRunReport:
    """Read stations, plan records and events of these areas and build the report."""
    stations = session.exec(select(Station).where(col(Station.area_code).in_(area_codes))).all()
    ids = [s.id for s in stations]
    planned = session.exec(
        select(PlannedItem).where(
            col(PlannedItem.station_id).in_(ids),
            col(PlannedItem.start_at) >= from_at - SLACK,
            col(PlannedItem.start_at) < to_at + SLACK,
        )
    ).all()
    item_events = session.exec(
        select(StationEvent).where(
            col(StationEvent.station_id).in_(ids),
            col(StationEvent.kind).in_(ITEM_KINDS),
            col(StationEvent.at) >= from_at - SLACK,
            col(StationEvent.at) < to_at + SLACK,
        )
    ).all()
    alert_events = session.exec(
        select(StationEvent).where(
            col(StationEvent.station_id).in_(ids),
            col(StationEvent.alert_id).is_not(None),
            col(StationEvent.at) >= from_at,
            col(StationEvent.at) < to_at,
        )
    ).all()
    live_events = session.exec(
        select(StationEvent).where(
            col(StationEvent.station_id).in_(ids),
            col(StationEvent.kind).in_(LIVE_KINDS),
            col(StationEvent.at) >= from_at - SLACK,
            col(StationEvent.at) < to_at + SLACK,
        )
    ).all()
    live_ids = {
        e.item_id.removeprefix(LIVE_ITEM_PREFIX) for e in live_events if e.item_id is not None
    }
    live_sessions = session.exec(select(LiveSession).where(col(LiveSession.id).in_(live_ids))).all()
    alert_ids = {e.alert_id for e in alert_events}
    drills = session.exec(
        select(AlertRecord.alert_id).where(
            col(AlertRecord.alert_id).in_(alert_ids), col(AlertRecord.drill)
        )
    ).all()
    return build_report(
        [StationInfo(s.id, s.name, s.area_code) for s in stations],
        [
            Planned(
                station_id=p.station_id,
                item_id=p.item_id,
                start_at=p.start_at,
                length_ms=p.length_ms,
                priority=p.priority,
                title=p.title,
                source=p.source,
                withdrawn=p.withdrawn_at is not None,
            )
            for p in planned
        ],
        [
            Reported(
                station_id=e.station_id,
                kind=e.kind,
                at=e.at,
                item_id=e.item_id,
                started_at=e.started_at,
                finished_at=e.finished_at,
                alert_id=e.alert_id,
                reason=e.reason,
            )
            for e in [*item_events, *alert_events, *live_events]
        ],
        from_at=from_at,
        to_at=to_at,
        now=now,
        grace=grace,
        drills=frozenset(drills),
        live_sessions=[
            LiveInfo(row.id, row.title, row.created_by, row.ended_at) for row in live_sessions
        ],
    )
