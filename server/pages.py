"""Server-rendered Vietnamese status pages: the fleet, and one broadcast station by station.

Plain HTML that refreshes itself, no JavaScript framework and no CDN, so it works
on a commune office PC with a poor connection and in the offline demo. Times are
stored in UTC and shown in Vietnam's local time.

Every page needs a signed-in user (anyone else is sent to ``/login``) and shows only
what the user's roles cover, through the same permission check as the API.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from sqlmodel import Session, col, select

from server.api.auth import set_session_cookie, sign_in, sign_out
from server.api.broadcasts import visible_broadcasts, visible_detail
from server.api.deps import ContextDep, SessionDep
from server.auth.actor import Actor
from server.auth.deps import (
    LimiterDep,
    bearer_scheme,
    cookie_scheme,
    current_actor,
    visible_areas,
)
from server.auth.models import LoginBody
from server.auth.permissions import Action
from server.auth.service import SESSION_COOKIE
from server.models import Area, AudioAsset, Station

try:
    LOCAL_TZ: timezone | ZoneInfo = ZoneInfo("Asia/Ho_Chi_Minh")
except ZoneInfoNotFoundError:  # no tzdata on the host; Vietnam has no DST
    LOCAL_TZ = timezone(timedelta(hours=7), "ICT")

REFRESH_S = 3
RECENT_BROADCASTS = 20

STATE_LABELS = {
    "planned": "Đã lên lịch",
    "delivered": "Đã nhận lịch",
    "fetched": "Đã tải âm thanh",
    "playing": "Đang phát",
    "played": "Đã phát xong",
    "failed": "Lỗi",
    "interrupted": "Bị ngắt",
}
STATUS_LABELS = {
    "online": "Trực tuyến",
    "offline": "Mất kết nối",
    "stopped": "Đã dừng",
    "unknown": "Chưa rõ",
}
PRIORITY_LABELS = {
    "emergency": "Khẩn cấp",
    "live": "Trực tiếp",
    "priority": "Ưu tiên",
    "normal": "Thông thường",
    "background": "Tiếp sóng / nền",
}


def local_time(value: datetime | None, with_ms: bool = False) -> str:
    if value is None:
        return "—"
    local = value.astimezone(LOCAL_TZ)
    if with_ms:
        return local.strftime("%d/%m/%Y %H:%M:%S.%f")[:-3]
    return local.strftime("%d/%m/%Y %H:%M:%S")


templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["local"] = local_time
templates.env.globals.update(
    STATE_LABELS=STATE_LABELS,
    STATUS_LABELS=STATUS_LABELS,
    PRIORITY_LABELS=PRIORITY_LABELS,
    REFRESH_S=REFRESH_S,
)

router = APIRouter(include_in_schema=False)


def _area_names(session: Session, codes: set[str]) -> dict[str, str]:
    rows = session.exec(select(Area).where(col(Area.code).in_(codes))).all()
    return {area.code: area.name for area in rows}


def safe_next(target: str | None) -> str:
    """Only a path on this server: ``//evil.example`` or a full URL would be an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def page_actor(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Actor:
    """The signed-in user, or a redirect to the sign-in page (also for an ended session)."""
    try:
        actor = current_actor(request, session, context, bearer, cookie)
    except HTTPException as exc:
        if exc.status_code != status.HTTP_401_UNAUTHORIZED:
            raise
        actor = None
    if actor is None:
        target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        raise HTTPException(
            status.HTTP_303_SEE_OTHER,
            "sign in first",
            headers={"Location": f"/login?next={target}"},
        )
    return actor


PageActorDep = Annotated[Actor, Depends(page_actor)]


def _login_form(
    request: Request, next_path: str, username: str = "", error: str | None = None, code: int = 200
) -> HTMLResponse:
    context = {"next": safe_next(next_path), "username": username, "error": error}
    return templates.TemplateResponse(request, "login.html", context, status_code=code)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return _login_form(request, next)


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    limiter: LimiterDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    totp: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    body = LoginBody(username=username[:200], password=password[:1024], totp=totp[:12] or None)
    try:
        _user, raw = sign_in(request, session, context, limiter, body)
    except HTTPException as exc:
        return _login_form(request, next, username, str(exc.detail), exc.status_code)
    response = RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    set_session_cookie(response, raw, context)
    return response


@router.post("/logout")
def logout_submit(request: Request, session: SessionDep, actor: PageActorDep) -> RedirectResponse:
    sign_out(request, session, actor)
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def index_page(request: Request, session: SessionDep, actor: PageActorDep) -> HTMLResponse:
    station_scope = visible_areas(actor, Action.STATION_READ, session)
    stations = session.exec(
        select(Station).where(col(Station.area_code).in_(station_scope)).order_by(col(Station.id))
    ).all()
    broadcasts = visible_broadcasts(session, actor, RECENT_BROADCASTS)
    context: dict[str, Any] = {
        "actor": actor,
        "stations": stations,
        "areas": _area_names(session, {s.area_code for s in stations}),
        "broadcasts": [visible_detail(session, actor, b.id) for b in broadcasts if b.id],
    }
    return templates.TemplateResponse(request, "index.html", context)


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
    context: dict[str, Any] = {
        "actor": actor,
        "broadcast": detail,
        "audio": session.get(AudioAsset, detail.audio_id),
        "stations": stations,
        "areas": _area_names(session, {s.area_code for s in stations.values()}),
    }
    return templates.TemplateResponse(request, "broadcast.html", context)
