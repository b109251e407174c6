"""The overview a clerk opens first, and one broadcast station by station.

Overview = what will sound today in my area, which loudspeakers are silent, which
alarms are open, any alert on the air right now, and (for an approver) how many
programmes wait for approval.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlmodel import col, select

from server.api.broadcasts import visible_detail
from server.api.deps import ContextDep, SessionDep
from server.auth.deps import visible_areas
from server.auth.permissions import Action
from server.models import AudioAsset, Station
from server.web.alerts import live_alerts
from server.web.common import LOCAL_TZ, PageActorDep, PageRoute, area_names, may_somewhere, render
from server.web.fleet import FLEET_STATES, alarm_rows, fleet_state
from server.web.programmes import calendar_items
from server.web.review import approval_queue

router = APIRouter(route_class=PageRoute)

OPEN_ALARMS_SHOWN = 5


def local_day(now: datetime) -> tuple[datetime, datetime]:
    """Today in Vietnam, as a UTC interval [start, end)."""
    today = now.astimezone(LOCAL_TZ).date()
    start = datetime.combine(today, time(0), LOCAL_TZ)
    return start, start + timedelta(days=1)


@router.get("/", response_class=HTMLResponse)
def index_page(
    request: Request, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> HTMLResponse:
    now = context.clock()
    start, end = local_day(now)
    scope = visible_areas(actor, Action.STATION_READ, session)
    stations = session.exec(select(Station).where(col(Station.area_code).in_(scope))).all()
    counts = dict.fromkeys(FLEET_STATES, 0)
    for station in stations:
        counts[fleet_state(station)] += 1
    can_alarms = may_somewhere(actor, Action.ALARM_READ)
    alarms = alarm_rows(session, actor, "open") if can_alarms else []
    values: dict[str, Any] = {
        "actor": actor,
        "now": now,
        "today": start,
        "station_count": len(stations),
        "counts": counts,
        "today_items": calendar_items(session, actor, start, end, now),
        "alarms": alarms[:OPEN_ALARMS_SHOWN],
        "alarm_count": len(alarms),
        "alerts": live_alerts(session, actor),
        "areas": area_names(session, set(scope)),
        "can_approve": may_somewhere(actor, Action.PROGRAMME_APPROVE),
        "approval_count": len(approval_queue(session, actor)),
    }
    return render(request, "index.html", values)


@router.get("/broadcasts/{broadcast_id}", response_class=HTMLResponse)
def broadcast_page(
    request: Request, broadcast_id: int, session: SessionDep, actor: PageActorDep
) -> HTMLResponse:
    detail = visible_detail(session, actor, broadcast_id)
    stations = {
        s.id: s
        for s in session.exec(
            select(Station).where(col(Station.id).in_([t.station_id for t in detail.targets]))
        ).all()
    }
    values: dict[str, Any] = {
        "actor": actor,
        "broadcast": detail,
        "audio": session.get(AudioAsset, detail.audio_id),
        "stations": stations,
        "areas": area_names(session, {s.area_code for s in stations.values()}),
    }
    return render(request, "broadcast.html", values)
