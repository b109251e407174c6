"""The technician's pages: the fleet with its offline map, one station, the alarms.

The technician's question is "which loudspeaker is dead, and why": every list is sorted
worst-first and every state is shown with a colour AND a word and a symbol, so it reads
on a sun-lit phone screen and for colour-blind people alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from sqlmodel import Session, col, select

from server.api.commands import read_command
from server.api.deps import ContextDep, SessionDep
from server.auth.actor import Actor
from server.auth.deps import visible_areas
from server.auth.permissions import Action, allowed_somewhere
from server.commands.models import CommandPublic
from server.health.alarms import alarm_history, list_alarms
from server.health.models import Alarm, AlarmEvent, AlarmState, HealthSample
from server.i18n import N_, gettext, ngettext
from server.i18n import gettext as _
from server.i18n.reasons import station_reason
from server.models import Station, StationEvent
from server.settings import Settings
from server.web.common import PageActorDep, PageRoute, area_names, decimal, may, render, templates
from server.web.item_names import item_names
from server.web.refusals import station_words

router = APIRouter(route_class=PageRoute)


FLEET_STATES = ("offline", "degraded", "unknown", "online")
"""The technician's four buckets, worst first: the order of the tiles and the list."""

FLEET_LABELS = {
    "online": N_("Working"),
    "degraded": N_("Has a problem"),
    "offline": N_("Disconnected"),
    "unknown": N_("Unknown"),
}
FLEET_SYMBOLS = {"online": "✓", "degraded": "!", "offline": "✕", "unknown": "?"}

EVENT_LABELS = {
    "plan_accepted": N_("Schedule accepted"),
    "audio_fetched": N_("Audio downloaded"),
    "audio_failed": N_("Audio download failed"),
    "playing": N_("Started playing"),
    "played": N_("Finished playing"),
    "interrupted": N_("Interrupted"),
    "failed": N_("Playback failed"),
    "rejected": N_("Command refused"),
    "trust_updated": N_("Trusted keys updated"),
    "amp_fault": N_("Amplifier fault"),
    "relay_fault": N_("Relay fault"),
    "stream_unreachable": N_("Stream unreachable"),
    "alert_received": N_("Alert received"),
    "alert_playing": N_("Alert playing"),
    "alert_finished": N_("Alert finished"),
    "alert_failed": N_("Alert failed"),
    "alert_cancelled": N_("Alert cancelled"),
    "library_failed": N_("Alert library download failed"),
    "audio_corrupt": N_("Cached audio damaged, fetched again"),
}
BAD_EVENTS = frozenset(
    {
        "audio_failed",
        "interrupted",
        "failed",
        "rejected",
        "amp_fault",
        "relay_fault",
        "stream_unreachable",
        "alert_failed",
        "library_failed",
        "audio_corrupt",
    }
)
RECENT_EVENTS = 50

ALARM_STATE_LABELS = {
    "open": N_("Open"),
    "acknowledged": N_("Acknowledged"),
    "resolved": N_("Resolved"),
}
SEVERITY_LABELS = {"critical": N_("Critical"), "warning": N_("Warning"), "info": N_("Info")}
ALARM_LABELS = {
    "offline": N_("Disconnected for too long"),
    "amp_fault": N_("Amplifier fault"),
    "disk_low": N_("Storage almost full"),
    "cpu_temp": N_("CPU too hot"),
    "clock_offset": N_("Clock is off"),
    "item_not_played": N_("Not played as scheduled"),
}
CHART_METRICS = (
    ("cpu_temp_c", N_("CPU temperature"), "°C"),
    ("disk_free_pct", N_("Free storage"), "%"),
    ("clock_offset_ms", N_("Clock offset"), "ms"),
    ("modem_rssi_dbm", N_("Mobile signal"), "dBm"),
    ("amp_current_ma", N_("Amplifier current"), "mA"),
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


templates.env.filters["station_words"] = station_words
templates.env.filters["station_reason"] = station_reason
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


def _yes_no(value: object, yes: str = N_("Yes"), no: str = N_("No")) -> str:
    return "—" if value is None else gettext(yes if value else no)


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return gettext("%(days)d d %(hours)d h") % {"days": days, "hours": hours}
    return gettext("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": rest // 60}


def probe_rows(health: dict[str, Any], settings: Settings) -> list[Probe]:
    """The last heartbeat as the technician reads it: units, words, red flags.

    Every probe is optional on the station side, so a missing one reads "—", never 0.
    A value is flagged by the same thresholds that raise the alarms.
    """
    cpu = health.get("cpu_temp_c")
    free, total = health.get("disk_free_bytes"), health.get("disk_total_bytes")
    disk = "—"
    low_disk = False
    if free is not None:
        disk = gettext("%(free)s GB free") % {"free": decimal(free / 1e9)}
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
            _("CPU temperature"),
            f"{decimal(cpu)} °C" if cpu is not None else "—",
            cpu is not None and cpu > settings.alarm_cpu_temp_c,
        ),
        Probe(_("CPU load (1 min)"), decimal(health.get("load_1m"), 2)),
        Probe(
            _("Memory used"),
            f"{decimal(health.get('mem_used_pct'), 0)} %"
            if health.get("mem_used_pct") is not None
            else "—",
        ),
        Probe(_("Storage"), disk, low_disk),
        Probe(
            _("Clock offset"),
            f"{decimal(offset, 0)} ms" if offset is not None else "—",
            offset is not None and abs(offset) > settings.alarm_clock_offset_ms,
        ),
        Probe(
            _("NTP synchronised"),
            _yes_no(health.get("ntp_synced")),
            health.get("ntp_synced") is False,
        ),
        Probe(_("Mobile signal"), signal),
        Probe(_("Amplifier"), _yes_no(health.get("amp_on"), N_("On"), N_("Off"))),
        Probe(
            _("Amplifier current"),
            f"{decimal(health.get('amp_current_ma'), 0)} mA"
            if health.get("amp_current_ma") is not None
            else "—",
        ),
        Probe(
            _("Amplifier temperature"),
            f"{decimal(health.get('amp_temp_c'))} °C"
            if health.get("amp_temp_c") is not None
            else "—",
        ),
        Probe(_("Amplifier fault"), amp_fault or _("No"), bool(amp_fault)),
        Probe(
            _("Relay"),
            _yes_no(health.get("relay_ok"), N_("Normal"), N_("Fault")),
            health.get("relay_ok") is False,
        ),
        Probe(
            _("Volume"),
            f"{health['volume_pct']} %" if health.get("volume_pct") is not None else "—",
        ),
        Probe(_("Playing now"), health.get("playing_item") or _("No")),
        Probe(
            _("Schedule items received"),
            ngettext("%(n)d item", "%(n)d items", health.get("plan_items", 0))
            % {"n": health.get("plan_items", 0)},
        ),
        Probe(_("Audio files cached"), str(health.get("cached_audio", "—"))),
        Probe(_("Running for"), _uptime(health.get("uptime_s"))),
        Probe(_("Software version"), str(health.get("agent_version") or "—")),
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
        "areas": area_names(session, {s.area_code for s in stations}),
    }
    return render(request, "fleet.html", values)


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
    if station is None or not may(actor, Action.STATION_READ, station.area_code, session):
        # The same answer for "absent" and "not yours": a page never confirms a station id.
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no station {station_id!r}")
    can_read_alarms = may(actor, Action.ALARM_READ, station.area_code, session)
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
        "area": area_names(session, {station.area_code}).get(station.area_code, ""),
        "events": events,
        "item_names": item_names(session, station_id, (e.item_id or "" for e in events)),
        "can_command": may(actor, Action.STATION_COMMAND, station.area_code, session),
        "alarms": alarm_rows(session, actor, "open", station.id) if can_read_alarms else [],
        "can_read_alarms": can_read_alarms,
    }
    return render(request, "station.html", values)


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
    return render(request, "alarms.html", context)


@router.get("/stations/{station_id}/commands/{command_id}/reply")
def command_reply(
    station_id: str, command_id: int, session: SessionDep, actor: PageActorDep
) -> JSONResponse:
    """A command as ``GET /api/v1/…/commands/{id}`` answers it, with the station's reply
    (``detail``) in the reader's words: the station page polls this."""
    row = read_command(station_id, command_id, session, actor)
    body = CommandPublic.model_validate(row).model_dump(mode="json")
    body["detail"] = station_words(row.detail) or None
    return JSONResponse(body)
