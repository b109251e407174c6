"""The live page: pick where to speak, press to go on air, see what is on air now.

The page only lays out the choices; ``/static/live-mic.js`` captures the microphone,
encodes Opus in the browser (WebCodecs) and streams it to the API's WebSocket.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlmodel import col, func, select

from server.api.deps import ContextDep, SessionDep
from server.auth.deps import authorize, visible_areas
from server.auth.permissions import Action
from server.live.models import LiveSession
from server.models import Station
from server.web.common import PageActorDep, PageRoute, area_names, render
from server.web.programmes import stations_and_groups

router = APIRouter(route_class=PageRoute)

STATIONS_SHOWN = 300


@router.get("/live", response_class=HTMLResponse)
def live_page(
    request: Request, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> HTMLResponse:
    authorize(actor, Action.LIVE_BROADCAST, None, session)
    scope = visible_areas(actor, Action.LIVE_BROADCAST, session)
    counts = dict(
        session.exec(
            select(Station.area_code, func.count())
            .where(col(Station.area_code).in_(scope))
            .group_by(col(Station.area_code))
        ).all()
    )
    names = area_names(session, set(counts))
    areas = [
        {"code": code, "name": names.get(code, code), "stations": n}
        for code, n in sorted(counts.items(), key=lambda kv: names.get(kv[0], kv[0]))
    ]
    stations, groups = stations_and_groups(session, scope, STATIONS_SHOWN)
    visible = {s.id for s in stations}
    on_air = [
        {"id": o.session_id, "title": o.title, "by": o.actor.name, "stations": o.station_ids}
        for o in context.live.on_air()
        if visible & set(o.station_ids)
    ]
    recent = [
        row
        for row in session.exec(
            select(LiveSession).order_by(col(LiveSession.created_at).desc()).limit(20)
        ).all()
        if visible & set(row.station_ids or [])
    ]
    values: dict[str, Any] = {
        "actor": actor,
        "areas": areas,
        "stations": stations,
        "groups": groups,
        "area_names": names,
        "on_air": on_air,
        "recent": recent,
        "station_names": {s.id: s.name for s in stations},
    }
    return render(request, "live.html", values)
