"""Users and their roles, and the audit log: the province administrator's pages.

The user form is validated here field by field (errors under the field, in the reader's
language), then created by the same code as ``POST /api/v1/users``.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlmodel import Session, col, select

from server.api import users as users_api
from server.api.deps import ContextDep, SessionDep
from server.audit.log import verify_chain
from server.audit.models import AuditEntry
from server.auth.actor import Actor
from server.auth.deps import authorize, visible_areas
from server.auth.models import GrantBody, UserCreate
from server.auth.permissions import Action, Role
from server.i18n import gettext
from server.models import Area
from server.web.audit_words import FAMILIES, describe
from server.web.common import LOCAL_TZ, PageActorDep, PageRoute, done, render
from server.web.programme_form import parse_day

router = APIRouter(route_class=PageRoute)

AUDIT_PAGE = 100
PASSWORD_MIN = 10


def manageable_areas(session: Session, actor: Actor) -> list[Area]:
    scope = visible_areas(actor, Action.USER_MANAGE, session)
    order = {"province": 0, "district": 1, "commune": 2}
    areas = session.exec(select(Area).where(col(Area.code).in_(scope))).all()
    return sorted(areas, key=lambda a: (order.get(str(a.level.value), 3), a.name))


def _users_page(
    request: Request,
    session: Session,
    actor: Actor,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    code: int = 200,
) -> HTMLResponse:
    users = users_api.read_users(session, actor)
    areas = manageable_areas(session, actor)
    values: dict[str, Any] = {
        "actor": actor,
        "users": users,
        "areas": areas,
        "area_names": {a.code: a.name for a in session.exec(select(Area))},
        "roles": [r.value for r in Role],
        "form": form or {"role": Role.COMMUNE_OPERATOR.value, "area_code": ""},
        "errors": errors or {},
    }
    return render(request, "users.html", values, status_code=code)


@router.get("/users", response_class=HTMLResponse)
def users_page(request: Request, session: SessionDep, actor: PageActorDep) -> HTMLResponse:
    authorize(actor, Action.USER_MANAGE, None, session)
    return _users_page(request, session, actor)


@router.post("/users", response_class=HTMLResponse)
def create_user(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    username: Annotated[str, Form()] = "",
    display_name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    area_code: Annotated[str, Form()] = "",
) -> Response:
    authorize(actor, Action.USER_MANAGE, None, session)
    form = {
        "username": username.strip(),
        "display_name": display_name.strip(),
        "role": role,
        "area_code": area_code,
    }
    errors: dict[str, str] = {}
    if not form["username"]:
        errors["username"] = gettext("Enter a username.")
    if len(password) < PASSWORD_MIN:
        errors["password"] = gettext("The password needs at least %(n)s characters.") % {
            "n": PASSWORD_MIN
        }
    if role not in {r.value for r in Role}:
        errors["role"] = gettext("Choose a role.")
    allowed = {a.code for a in manageable_areas(session, actor)}
    if area_code not in allowed:
        errors["area_code"] = gettext("Choose an area you manage.")
    body: UserCreate | None = None
    if not errors:
        try:
            body = UserCreate(
                username=form["username"],
                display_name=form["display_name"],
                password=password,
                grants=[GrantBody(role=Role(role), area_code=area_code)],
            )
        except ValidationError as exc:
            errors["username"] = gettext("This username is not allowed: %(why)s") % {
                "why": "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            }
    if body is None:
        return _users_page(request, session, actor, form, errors, 422)
    try:
        users_api.create_user_route(body, session, actor, context.clock)
    except HTTPException as exc:
        session.rollback()
        if exc.status_code == status.HTTP_409_CONFLICT:
            errors = {"username": gettext("This username is already taken.")}
        elif exc.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT:
            errors = {"password": str(exc.detail)}
        else:
            raise
        return _users_page(request, session, actor, form, errors, exc.status_code)
    return done("/users", "user_added")


@router.post("/users/{user_id}/revoke")
def revoke_role(
    user_id: int,
    session: SessionDep,
    actor: PageActorDep,
    role: Annotated[Role, Form()],
    area_code: Annotated[str, Form()],
) -> RedirectResponse:
    users_api.delete_grant(user_id, role, area_code, session, actor)
    return done("/users", "role_taken")


@router.post("/users/{user_id}/grant")
def grant_role(
    user_id: int,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    role: Annotated[Role, Form()],
    area_code: Annotated[str, Form()],
) -> RedirectResponse:
    users_api.create_grant(
        user_id, GrantBody(role=role, area_code=area_code), session, actor, context.clock
    )
    return done("/users", "role_given")


# ------------------------------------------------------------------ audit log


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    session: SessionDep,
    actor: PageActorDep,
    who: str = "",
    action: str = "",
    day: str = "",
    page: int = 0,
    verify: bool = False,
) -> HTMLResponse:
    """Newest first, filtered by person, kind of action and local day."""
    authorize(actor, Action.AUDIT_READ, None, session)
    query = select(AuditEntry)
    errors: dict[str, str] = {}
    if who.strip():
        query = query.where(col(AuditEntry.actor_name) == who.strip())
    if action.strip():
        query = query.where(col(AuditEntry.action).startswith(action.strip(), autoescape=True))
    if day:
        try:
            start = datetime.combine(parse_day(day), time(0), LOCAL_TZ)
        except ValueError:
            errors["day"] = gettext("Enter the date, e.g. 31/12/2025.")
        else:
            query = query.where(
                col(AuditEntry.at) >= start, col(AuditEntry.at) < start + timedelta(days=1)
            )
    page = max(0, min(page, 10**6))
    entries = session.exec(
        query.order_by(col(AuditEntry.id).desc()).offset(page * AUDIT_PAGE).limit(AUDIT_PAGE + 1)
    ).all()
    values: dict[str, Any] = {
        "actor": actor,
        "entries": entries[:AUDIT_PAGE],
        "more": len(entries) > AUDIT_PAGE,
        "page": page,
        "filters": {"who": who, "action": action, "day": day},
        "errors": errors,
        "chain": verify_chain(session) if verify else None,
        "words": {
            e.id: describe(e.action, e.object_type, e.object_id, e.before, e.after) for e in entries
        },
        "FAMILIES": FAMILIES,
    }
    return render(request, "audit.html", values)
