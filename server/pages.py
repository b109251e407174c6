"""Server-rendered Vietnamese status pages: the fleet, and one broadcast station by station.

Plain HTML that refreshes itself, no JavaScript framework and no CDN, so it works
on a commune office PC with a poor connection and in the offline demo. Times are
stored in UTC and shown in Vietnam's local time.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlmodel import Session, col, select

from server.api.broadcasts import broadcast_detail
from server.api.deps import SessionDep
from server.models import Area, AudioAsset, Broadcast, Station

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


@router.get("/", response_class=HTMLResponse)
def index_page(request: Request, session: SessionDep) -> HTMLResponse:
    stations = session.exec(select(Station).order_by(col(Station.id))).all()
    broadcasts = session.exec(
        select(Broadcast).order_by(col(Broadcast.start_at).desc()).limit(RECENT_BROADCASTS)
    ).all()
    context: dict[str, Any] = {
        "stations": stations,
        "areas": _area_names(session, {s.area_code for s in stations}),
        "broadcasts": [broadcast_detail(session, b) for b in broadcasts],
    }
    return templates.TemplateResponse(request, "index.html", context)


@router.get("/broadcasts/{broadcast_id}", response_class=HTMLResponse)
def broadcast_page(request: Request, broadcast_id: int, session: SessionDep) -> HTMLResponse:
    broadcast = session.get(Broadcast, broadcast_id)
    if broadcast is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"broadcast {broadcast_id} does not exist")
    detail = broadcast_detail(session, broadcast)
    stations = {
        s.id: s
        for s in session.exec(
            select(Station).where(col(Station.id).in_([t.station_id for t in detail.targets]))
        ).all()
    }
    context: dict[str, Any] = {
        "broadcast": detail,
        "audio": session.get(AudioAsset, broadcast.audio_id),
        "stations": stations,
        "areas": _area_names(session, {s.area_code for s in stations.values()}),
    }
    return templates.TemplateResponse(request, "broadcast.html", context)
