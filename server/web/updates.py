"""Cập nhật phần mềm: each station's release and each rollout's progress; start and stop.

Plain HTML forms (no script). Starting and stopping go through the same service as the
API (``server.updates.service``), so both are audited with the person who did them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from server.api.deps import ContextDep, DbId, SessionDep
from server.api.updates import rollout_public
from server.auth.actor import Actor
from server.auth.deps import authorize, client_ip, visible_areas
from server.auth.permissions import Action
from server.i18n import N_, gettext
from server.models import Area, AreaLevel, Station
from server.updates.models import ACTIVE, Release, Rollout, RolloutMember, RolloutState
from server.updates.service import UpdateError
from server.web.common import PageActorDep, PageRoute, may_somewhere, render

router = APIRouter(route_class=PageRoute)

ROLLOUT_STATE_NAMES = {
    "canary": N_("Canaries first"),
    "rolling": N_("Rolling out"),
    "done": N_("Done"),
    "failed": N_("Stopped: a canary failed"),
    "stopped": N_("Stopped"),
}
MEMBER_STATE_NAMES = {
    "waiting": N_("Waiting"),
    "sent": N_("Sent"),
    "downloading": N_("Downloading"),
    "installed": N_("Installed, waiting for a quiet moment"),
    "switching": N_("Restarting into it"),
    "updated": N_("Updated"),
    "rolled_back": N_("Rolled back"),
    "failed": N_("Failed"),
}
ROLLOUTS_SHOWN = 10


def _page(
    request: Request,
    session: Session,
    actor: Actor,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    scope = visible_areas(actor, Action.STATION_READ, session)
    rollouts = session.exec(
        select(Rollout)
        .where(col(Rollout.area_code).in_(scope))
        .order_by(col(Rollout.id).desc())
        .limit(ROLLOUTS_SHOWN)
    ).all()
    running = {r.id for r in rollouts if RolloutState(r.state) in ACTIVE}
    member_of: dict[str, RolloutMember] = {}
    if running:
        rows = session.exec(
            select(RolloutMember).where(col(RolloutMember.rollout_id).in_(running))
        ).all()
        member_of = {m.station_id: m for m in rows}
    stations = session.exec(
        select(Station).where(col(Station.area_code).in_(scope)).order_by(col(Station.name))
    ).all()
    versions: dict[str, int] = {}
    for station in stations:
        version = str((station.last_health or {}).get("agent_version") or "?")
        versions[version] = versions.get(version, 0) + 1
    update_scope = visible_areas(actor, Action.STATION_UPDATE, session)
    areas = session.exec(select(Area).where(col(Area.code).in_(update_scope))).all()
    values: dict[str, Any] = {
        "actor": actor,
        "rollouts": [rollout_public(session, r, members=False) for r in rollouts],
        "stations": stations,
        "member_of": member_of,
        "versions": sorted(versions.items()),
        "releases": session.exec(select(Release).order_by(col(Release.id).desc())).all(),
        "areas": sorted(areas, key=lambda a: (a.level != AreaLevel.PROVINCE, a.name)),
        "can_update": may_somewhere(actor, Action.STATION_UPDATE),
        "ROLLOUT_STATE_NAMES": ROLLOUT_STATE_NAMES,
        "MEMBER_STATE_NAMES": MEMBER_STATE_NAMES,
        "ACTIVE": {s.value for s in ACTIVE},
        "error": error,
    }
    return render(request, "updates.html", values, status_code=status_code)


@router.get("/updates", response_class=HTMLResponse)
def updates_page(request: Request, session: SessionDep, actor: PageActorDep) -> HTMLResponse:
    authorize(actor, Action.STATION_READ, None, session)
    return _page(request, session, actor)


@router.post("/updates/rollouts", response_class=HTMLResponse)
def start_rollout(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    release_id: Annotated[int, Form(ge=1)],
    area_code: Annotated[str, Form()] = "",
    canary_pct: Annotated[int, Form(ge=0, le=100)] = 10,
    canary_minutes: Annotated[float, Form(ge=0, le=7 * 24 * 60)] = 30,
) -> Response:
    authorize(actor, Action.STATION_UPDATE, [area_code], session, object_type="rollout")
    try:
        context.updates.start_rollout(
            session, release_id, area_code, actor, canary_pct=canary_pct,
            canary_minutes=canary_minutes, source_ip=client_ip(request),
        )  # fmt: skip
    except UpdateError as exc:
        session.rollback()
        why = gettext("The rollout cannot start: %(why)s") % {"why": str(exc)}
        return _page(request, session, actor, error=why, status_code=422)
    return RedirectResponse("/updates", status_code=303)


@router.post("/updates/rollouts/{rollout_id}/stop", response_class=HTMLResponse)
def stop_rollout(
    request: Request,
    rollout_id: DbId,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
) -> Response:
    rollout = session.get(Rollout, rollout_id)
    area = rollout.area_code if rollout is not None else None
    authorize(actor, Action.STATION_UPDATE, [area] if area else None, session,
              object_type="rollout", object_id=str(rollout_id))  # fmt: skip
    try:
        context.updates.stop_rollout(
            session, rollout_id, actor, gettext("stopped on the page"), client_ip(request)
        )
    except UpdateError as exc:
        session.rollback()
        return _page(request, session, actor, error=str(exc), status_code=409)
    return RedirectResponse("/updates", status_code=303)
