"""Server-rendered Vietnamese status pages: the fleet, and one broadcast station by station.

Plain HTML that refreshes itself, no JavaScript framework and no CDN, so it works
on a commune office PC with a poor connection and in the offline demo. Times are
stored in UTC and shown in Vietnam's local time.

Every page needs a signed-in user (anyone else is sent to ``/login``) and shows only
what the user's roles cover, through the same permission check as the API.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
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
from server.auth.permissions import Action, allowed_somewhere
from server.auth.service import SESSION_COOKIE
from server.health.alarms import alarm_history, list_alarms
from server.health.models import Alarm, AlarmEvent, AlarmState, HealthSample
from server.models import Area, AudioAsset, Station, StationEvent
from server.settings import Settings

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
    "degraded": "Có sự cố",
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
STATIC_FILES = StaticFiles(directory=Path(__file__).parent / "static")
"""The pages' CSS and scripts, served by this server: no CDN, works on an offline network."""
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


# ------------------------------------------------------------ technician pages
#
# The technician's question is "which loudspeaker is dead, and why": every list is
# sorted worst-first and every state is shown with a colour AND a word and a symbol,
# so it reads on a sun-lit phone screen and for colour-blind people alike.

FLEET_STATES = ("offline", "degraded", "unknown", "online")
"""The technician's four buckets, worst first: the order of the tiles and the list."""

FLEET_LABELS = {
    "online": "Hoạt động tốt",
    "degraded": "Có sự cố",
    "offline": "Mất kết nối",
    "unknown": "Chưa rõ",
}
FLEET_SYMBOLS = {"online": "✓", "degraded": "!", "offline": "✕", "unknown": "?"}

EVENT_LABELS = {
    "plan_accepted": "Nhận lịch phát",
    "audio_fetched": "Tải âm thanh xong",
    "audio_failed": "Tải âm thanh lỗi",
    "playing": "Bắt đầu phát",
    "played": "Phát xong",
    "interrupted": "Bị ngắt",
    "failed": "Phát lỗi",
    "rejected": "Từ chối lệnh",
    "trust_updated": "Cập nhật khoá tin cậy",
    "amp_fault": "Lỗi amply",
    "relay_fault": "Lỗi rơ-le",
}
BAD_EVENTS = frozenset(
    {"audio_failed", "interrupted", "failed", "rejected", "amp_fault", "relay_fault"}
)
RECENT_EVENTS = 50

ALARM_STATE_LABELS = {"open": "Đang mở", "acknowledged": "Đã xác nhận", "resolved": "Đã xử lý"}
SEVERITY_LABELS = {"critical": "Nghiêm trọng", "warning": "Cần chú ý", "info": "Thông tin"}
ALARM_LABELS = {
    "offline": "Mất kết nối quá lâu",
    "amp_fault": "Lỗi amply",
    "disk_low": "Ổ nhớ sắp đầy",
    "cpu_temp": "Nhiệt độ CPU quá cao",
    "clock_offset": "Đồng hồ bị lệch",
    "item_not_played": "Không phát theo lịch",
}
CHART_METRICS = (
    ("cpu_temp_c", "Nhiệt độ CPU", "°C"),
    ("disk_free_pct", "Ổ nhớ còn trống", "%"),
    ("clock_offset_ms", "Lệch đồng hồ", "ms"),
    ("modem_rssi_dbm", "Sóng di động", "dBm"),
    ("amp_current_ma", "Dòng amply", "mA"),
)
"""Metric names as the health endpoint knows them, with the words and unit shown."""

MAP_WIDTH = 640
MAP_HEIGHT = 420
MAP_PADDING = 48


def fleet_state(station: Station) -> str:
    """The station's bucket: a clean stop still means a silent loudspeaker, so it is offline."""
    status_value = str(station.status.value)
    if status_value == "stopped":
        return "offline"
    return status_value if status_value in FLEET_LABELS else "unknown"


def _worst_first(station: Station) -> tuple[int, str]:
    return FLEET_STATES.index(fleet_state(station)), station.name


def decimal(value: float | None, digits: int = 1) -> str:
    """A number as Vietnamese write it: decimal comma, thin thousands separator."""
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}"
    return text.replace(",", " ").replace(".", ",")


templates.env.filters["decimal"] = decimal
templates.env.globals.update(
    FLEET_STATES=FLEET_STATES,
    FLEET_LABELS=FLEET_LABELS,
    FLEET_SYMBOLS=FLEET_SYMBOLS,
    EVENT_LABELS=EVENT_LABELS,
    BAD_EVENTS=BAD_EVENTS,
    ALARM_STATE_LABELS=ALARM_STATE_LABELS,
    SEVERITY_LABELS=SEVERITY_LABELS,
    ALARM_LABELS=ALARM_LABELS,
    CHART_METRICS=CHART_METRICS,
)


@dataclass(frozen=True)
class MapPoint:
    """One station placed on the offline SVG map (x right, y down, in viewBox units)."""

    station: Station
    state: str
    x: float
    y: float
    label_x: float = 0.0
    label_y: float = 0.0
    label_anchor: str = "start"


MARKER_R = 11.0
LABEL_CHAR_W = 7.2  # an average 13 px system-font character, diacritics included
LABEL_H = 16.0
LABEL_GAP = 4.0


def _overlaps(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(points: list[MapPoint], width: float, height: float) -> list[MapPoint]:
    """Put each name beside its marker where it hides no other name or marker.

    Stations of one village sit a few hundred metres apart, so their names would print
    over each other; greedily, north to south, each name takes the first free slot
    (right, left, then rows above and below). Cheap, and good enough for a commune.
    """
    taken = [(p.x - MARKER_R, p.y - MARKER_R, p.x + MARKER_R, p.y + MARKER_R) for p in points]
    placed: list[MapPoint] = []
    for point in sorted(points, key=lambda p: (p.y, p.x)):
        text_w = len(point.station.name) * LABEL_CHAR_W
        own = (point.x - MARKER_R, point.y - MARKER_R, point.x + MARKER_R, point.y + MARKER_R)
        others = [box for box in taken if box != own]
        best: tuple[float, float, str] | None = None
        for dy in (0.0, LABEL_H, -LABEL_H, 2 * LABEL_H, -2 * LABEL_H, 3 * LABEL_H):
            for anchor in ("start", "end"):
                left = (
                    point.x + MARKER_R + LABEL_GAP
                    if anchor == "start"
                    else point.x - MARKER_R - LABEL_GAP - text_w
                )
                baseline = point.y + 4.5 + dy
                box = (left, baseline - 12, left + text_w, baseline + 4)
                inside = box[0] >= 0 and box[2] <= width and box[1] >= 0 and box[3] <= height
                if inside and not any(_overlaps(box, other) for other in others):
                    best = (left if anchor == "start" else left + text_w, baseline, anchor)
                    break
            if best is not None:
                break
        if best is None:  # nowhere free: right of the marker, as a last resort
            best = (point.x + MARKER_R + LABEL_GAP, point.y + 4.5, "start")
        label_x, label_y, anchor = best
        taken.append((
            label_x if anchor == "start" else label_x - text_w,
            label_y - 12,
            label_x + text_w if anchor == "start" else label_x,
            label_y + 4,
        ))  # fmt: skip
        placed.append(
            replace(
                point, label_x=round(label_x, 1), label_y=round(label_y, 1), label_anchor=anchor
            )
        )
    order = {id(p.station): i for i, p in enumerate(points)}
    return sorted(placed, key=lambda p: order[id(p.station)])


def project(
    stations: list[Station],
    width: float = MAP_WIDTH,
    height: float = MAP_HEIGHT,
    padding: float = MAP_PADDING,
) -> list[MapPoint]:
    """Equirectangular projection fitted to the stations' bounding box, north up.

    One scale for both axes (longitude shrunk by cos(latitude)) so distances look
    right, the box centred in the drawing; no tiles, so it works with no internet.
    """
    if not stations:
        return []
    lats = [s.latitude for s in stations]
    lons = [s.longitude for s in stations]
    mid_lat = (min(lats) + max(lats)) / 2
    mid_lon = (min(lons) + max(lons)) / 2
    shrink = math.cos(math.radians(mid_lat))
    span_x = (max(lons) - min(lons)) * shrink
    span_y = max(lats) - min(lats)
    usable_w, usable_h = width - 2 * padding, height - 2 * padding
    # A single station (or all at one place) has no extent: put it in the middle.
    scale = min(
        usable_w / span_x if span_x > 0 else math.inf,
        usable_h / span_y if span_y > 0 else math.inf,
    )
    if math.isinf(scale):
        scale = 0.0
    points = [
        MapPoint(
            station=s,
            state=fleet_state(s),
            x=round(width / 2 + (s.longitude - mid_lon) * shrink * scale, 1),
            y=round(height / 2 - (s.latitude - mid_lat) * scale, 1),
        )
        for s in stations
    ]
    return place_labels(points, width, height)


@dataclass(frozen=True)
class Probe:
    """One line of the station's probe table: what, the value in words, and whether to worry."""

    label: str
    value: str
    bad: bool = False


def _yes_no(value: object, yes: str = "Có", no: str = "Không") -> str:
    return "—" if value is None else (yes if value else no)


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days} ngày {hours} giờ" if days else f"{hours} giờ {rest // 60} phút"


def probe_rows(health: dict[str, Any], settings: Settings) -> list[Probe]:
    """The last heartbeat as the technician reads it: units, Vietnamese words, red flags.

    Every probe is optional on the station side, so a missing one reads "—", never 0.
    A value is flagged by the same thresholds that raise the alarms.
    """
    cpu = health.get("cpu_temp_c")
    free, total = health.get("disk_free_bytes"), health.get("disk_total_bytes")
    disk = "—"
    low_disk = False
    if free is not None:
        disk = f"{decimal(free / 1e9)} GB trống"
        if total:
            disk += f" / {decimal(total / 1e9)} GB ({decimal(100 * free / total, 0)} %)"
            low_disk = 100 * free / total < settings.alarm_disk_free_pct
    offset = health.get("clock_offset_ms")
    rssi, operator = health.get("modem_rssi_dbm"), health.get("modem_operator")
    signal = "—" if rssi is None else f"{rssi} dBm"
    if operator:
        signal += f" · {operator}"
    amp_fault = health.get("amp_fault")
    return [
        Probe(
            "Nhiệt độ CPU",
            f"{decimal(cpu)} °C" if cpu is not None else "—",
            cpu is not None and cpu > settings.alarm_cpu_temp_c,
        ),
        Probe("Tải CPU (1 phút)", decimal(health.get("load_1m"), 2)),
        Probe(
            "Bộ nhớ đã dùng",
            f"{decimal(health.get('mem_used_pct'), 0)} %"
            if health.get("mem_used_pct") is not None
            else "—",
        ),
        Probe("Ổ nhớ", disk, low_disk),
        Probe(
            "Lệch đồng hồ",
            f"{decimal(offset, 0)} ms" if offset is not None else "—",
            offset is not None and abs(offset) > settings.alarm_clock_offset_ms,
        ),
        Probe("Đồng bộ NTP", _yes_no(health.get("ntp_synced")), health.get("ntp_synced") is False),
        Probe("Sóng di động", signal),
        Probe("Amply", _yes_no(health.get("amp_on"), "Đang bật", "Đang tắt")),
        Probe(
            "Dòng amply",
            f"{decimal(health.get('amp_current_ma'), 0)} mA"
            if health.get("amp_current_ma") is not None
            else "—",
        ),
        Probe(
            "Nhiệt độ amply",
            f"{decimal(health.get('amp_temp_c'))} °C"
            if health.get("amp_temp_c") is not None
            else "—",
        ),
        Probe("Lỗi amply", amp_fault or "Không", bool(amp_fault)),
        Probe(
            "Rơ-le",
            _yes_no(health.get("relay_ok"), "Bình thường", "Lỗi"),
            health.get("relay_ok") is False,
        ),
        Probe(
            "Âm lượng", f"{health['volume_pct']} %" if health.get("volume_pct") is not None else "—"
        ),
        Probe("Đang phát", health.get("playing_item") or "Không"),
        Probe("Lịch phát đã nhận", f"{health.get('plan_items', 0)} mục"),
        Probe("Âm thanh đã tải", str(health.get("cached_audio", "—"))),
        Probe("Thời gian chạy", _uptime(health.get("uptime_s"))),
        Probe("Phiên bản phần mềm", str(health.get("agent_version") or "—")),
    ]


def _visible_stations(session: Session, actor: Actor) -> list[Station]:
    scope = visible_areas(actor, Action.STATION_READ, session)
    stations = session.exec(select(Station).where(col(Station.area_code).in_(scope))).all()
    return sorted(stations, key=_worst_first)


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(
    request: Request, session: SessionDep, context: ContextDep, actor: PageActorDep
) -> HTMLResponse:
    """Counts by state, the offline map and the worst-first list of the user's stations."""
    stations = _visible_stations(session, actor)
    counts = dict.fromkeys(FLEET_STATES, 0)
    for station in stations:
        counts[fleet_state(station)] += 1
    values: dict[str, Any] = {
        "actor": actor,
        "now": context.clock(),
        "stations": stations,
        "states": {s.id: fleet_state(s) for s in stations},
        "counts": counts,
        "points": project(stations),
        "map_size": (MAP_WIDTH, MAP_HEIGHT),
        "areas": _area_names(session, {s.area_code for s in stations}),
    }
    return templates.TemplateResponse(request, "fleet.html", values)


@dataclass(frozen=True)
class AlarmRow:
    """One alarm as the list shows it: its station's name, its history, who may act on it."""

    alarm: Alarm
    station_name: str
    history: list[AlarmEvent]
    can_ack: bool


SEVERITY_ORDER = ("critical", "warning", "info")


def alarm_rows(
    session: Session, actor: Actor, state: str, station_id: str | None = None
) -> list[AlarmRow]:
    """The user's alarms in one state, worst severity first, then newest first."""
    scope = visible_areas(actor, Action.ALARM_READ, session)
    ack_scope = visible_areas(actor, Action.ALARM_ACK, session)
    alarms = list_alarms(session, scope, state=AlarmState(state), station_id=station_id)
    alarms.sort(
        key=lambda a: SEVERITY_ORDER.index(a.severity) if a.severity in SEVERITY_ORDER else 3
    )
    stations = {
        s.id: s
        for s in session.exec(
            select(Station).where(col(Station.id).in_({a.station_id for a in alarms}))
        ).all()
    }
    return [
        AlarmRow(
            alarm=a,
            station_name=stations[a.station_id].name,
            history=alarm_history(session, a.id or 0),
            can_ack=a.state == "open" and stations[a.station_id].area_code in ack_scope,
        )
        for a in alarms
    ]


def _may(actor: Actor, action: Action, area_code: str, session: Session) -> bool:
    """Whether ``actor`` may do ``action`` here: for showing a control, never for enforcing it."""
    return area_code in visible_areas(actor, action, session)


def _latest_health(session: Session, station: Station) -> dict[str, Any]:
    """The last heartbeat plus what only the server measures (the station's clock offset)."""
    health = dict(station.last_health or {})
    sample = session.exec(
        select(HealthSample)
        .where(HealthSample.station_id == station.id)
        .order_by(col(HealthSample.at).desc())
        .limit(1)
    ).first()
    if sample is not None and sample.clock_offset_ms is not None:
        health["clock_offset_ms"] = sample.clock_offset_ms
    return health


@router.get("/stations/{station_id}", response_class=HTMLResponse)
def station_page(
    request: Request,
    station_id: str,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
) -> HTMLResponse:
    """One station: its probes, charts, as-run log, alarms and the remote-action buttons."""
    station = session.get(Station, station_id)
    if station is None or not _may(actor, Action.STATION_READ, station.area_code, session):
        # The same answer for "absent" and "not yours": a page never confirms a station id.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"không có trạm {station_id!r}")
    can_read_alarms = _may(actor, Action.ALARM_READ, station.area_code, session)
    events = session.exec(
        select(StationEvent)
        .where(StationEvent.station_id == station_id)
        .order_by(col(StationEvent.received_at).desc(), col(StationEvent.id).desc())
        .limit(RECENT_EVENTS)
    ).all()
    values: dict[str, Any] = {
        "actor": actor,
        "station": station,
        "state": fleet_state(station),
        "probes": probe_rows(_latest_health(session, station), context.settings),
        "area": _area_names(session, {station.area_code}).get(station.area_code, ""),
        "events": events,
        "can_command": _may(actor, Action.STATION_COMMAND, station.area_code, session),
        "alarms": alarm_rows(session, actor, "open", station.id) if can_read_alarms else [],
        "can_read_alarms": can_read_alarms,
    }
    return templates.TemplateResponse(request, "station.html", values)


@router.get("/alarms", response_class=HTMLResponse)
def alarms_page(
    request: Request, session: SessionDep, actor: PageActorDep, state: str = "open"
) -> HTMLResponse:
    """Open, acknowledged and resolved alarms of the user's stations, one tab each."""
    state = state if state in ALARM_STATE_LABELS else "open"
    can_read_alarms = allowed_somewhere(actor.grants, Action.ALARM_READ)
    context: dict[str, Any] = {
        "actor": actor,
        "alarm_state": state,
        "alarms": alarm_rows(session, actor, state) if can_read_alarms else [],
        "can_read_alarms": can_read_alarms,
    }
    return templates.TemplateResponse(request, "alarms.html", context)
