"""Trạm chờ duyệt: stations waiting to join, placed and approved by a technician.

Plain HTML forms (no script): approving registers the station through the same code as
``POST /api/v1/stations`` (via :mod:`server.enrolment.service`); fresh claim codes are
shown once on the page that made them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session, col, select

from loaxa_protocol.enrolment import key_fingerprint
from server.api.deps import ContextDep, DbId, SessionDep
from server.api.enrolment import read_request_in_scope
from server.areas import subtree_codes
from server.auth.actor import Actor
from server.auth.deps import authorize, visible_areas
from server.auth.permissions import Action
from server.enrolment import service
from server.i18n import N_, gettext
from server.models import Area, AreaLevel
from server.web.common import PageActorDep, PageRoute, done, render

router = APIRouter(route_class=PageRoute)

CLAIM_DAYS = 30
REFUSALS_SHOWN_FOR = timedelta(days=1)
REFUSAL_WORDS = {
    "unknown": N_("unknown code"),
    "expired": N_("expired code"),
    "replayed": N_("code already used by another station"),
    "malformed": N_("not a claim code, or an unusable key"),
    "rejected": N_("asked again after being refused"),
}


def _page(
    request: Request,
    session: Session,
    context: ContextDep,
    actor: Actor,
    *,
    codes: list[str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    scope = visible_areas(actor, Action.STATION_REGISTER, session)
    areas = {a.code: a for a in session.exec(select(Area).where(col(Area.code).in_(scope)))}
    communes = sorted(
        (a for a in areas.values() if a.level != AreaLevel.PROVINCE), key=lambda a: a.name
    )
    rows = []
    for found, area_code in service.pending_requests(session, scope):
        inside = subtree_codes(session, [area_code])
        rows.append(
            {
                "request": found,
                "area": areas.get(area_code),
                "key": key_fingerprint(found.public_key),
                "communes": [a for a in communes if a.code in inside],
            }
        )
    province_wide = any(a.level == AreaLevel.PROVINCE for a in areas.values())
    refusals = [
        entry
        for entry in service.recent_refusals(session, context.clock() - REFUSALS_SHOWN_FOR)
        if entry.area_code in scope or (entry.area_code is None and province_wide)
    ]
    values: dict[str, Any] = {
        "actor": actor,
        "rows": rows,
        "refusals": refusals,
        "REFUSAL_WORDS": REFUSAL_WORDS,
        "areas": sorted(areas.values(), key=lambda a: (a.level != AreaLevel.PROVINCE, a.name)),
        "codes": codes or [],
        "claim_days": CLAIM_DAYS,
        "errors": errors or {},
    }
    return render(request, "enrolment.html", values, status_code=status_code)


@router.get("/enrolment", response_class=HTMLResponse)
def enrolment_page(
    request: Request, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> HTMLResponse:
    authorize(actor, Action.STATION_REGISTER, None, session)
    return _page(request, session, context, actor)


@router.post("/enrolment/claim-codes", response_class=HTMLResponse)
def issue_claim_codes(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    area_code: Annotated[str, Form()] = "",
    count: Annotated[int, Form(ge=1, le=service.MAX_CODES_AT_ONCE)] = 1,
) -> HTMLResponse:
    authorize(actor, Action.STATION_REGISTER, [area_code], session)
    issued = service.create_claim_codes(
        session, actor, area_code, count, timedelta(days=CLAIM_DAYS), context.clock()
    )
    session.commit()
    return _page(request, session, context, actor, codes=[code for _, code in issued])


@router.post("/enrolment/{request_id}/approve", response_class=HTMLResponse)
def approve(
    request: Request,
    request_id: DbId,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    name: Annotated[str, Form()] = "",
    area_code: Annotated[str, Form()] = "",
    latitude: Annotated[str, Form()] = "",
    longitude: Annotated[str, Form()] = "",
) -> Response:
    found, _ = read_request_in_scope(session, actor, request_id)
    errors: dict[str, str] = {}
    if not name.strip():
        errors[f"name-{request_id}"] = gettext("Enter the station's name.")
    place = None
    try:
        lat, lon = float(latitude.replace(",", ".")), float(longitude.replace(",", "."))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError
        place = service.Placement(name.strip(), area_code, lat, lon)
    except ValueError:
        errors[f"position-{request_id}"] = gettext(
            "Enter the latitude and longitude in degrees, e.g. 22.666 and 106.257."
        )
    if errors or place is None:
        return _page(request, session, context, actor, errors=errors, status_code=422)
    try:
        service.approve(session, context, actor, found, place)
    except (ValueError, HTTPException) as exc:
        session.rollback()
        why = exc.detail if isinstance(exc, HTTPException) else str(exc)
        errors[f"area-{request_id}"] = gettext("This station cannot be approved: %(why)s") % {
            "why": why
        }
        return _page(request, session, context, actor, errors=errors, status_code=422)
    session.commit()
    return done("/enrolment", "station_approved")


@router.post("/enrolment/{request_id}/reject")
def reject(
    request_id: DbId, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> Response:
    found, _ = read_request_in_scope(session, actor, request_id)
    try:
        service.reject(session, actor, found, context.clock())
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from exc
    session.commit()
    return done("/enrolment", "station_rejected")
