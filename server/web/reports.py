"""The report page: a month of as-run figures for an area, per station and summed, with
a chart, a CSV download and a print layout an official signs (issue 15).

Built on the as-run report (``server.reports``) with the API's roles and area scoping:
the same stations, the same counts as ``GET /api/v1/reports/as-run``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse
from sqlmodel import Session

from server.api.deps import ContextDep, SessionDep
from server.auth.deps import visible_areas
from server.auth.permissions import Action, scope_roots
from server.i18n import N_, current_language, gettext
from server.local_time import LOCAL_TZ
from server.models import Area, AreaLevel
from server.reports.chart import BAR_H, SHOWN, WIDTH, outcome_bars
from server.reports.service import MAX_WINDOW, load_report, report_scope
from server.web.common import STATE_LABELS, PageActorDep, PageRoute, area_names, render
from server.web.programme_form import parse_day

router = APIRouter(route_class=PageRoute)

OUTCOME_LABELS = {"missed": N_("Missed"), "pending": N_("Not due yet")}
LIVE_END_LABELS = {
    "stopped": N_("Stopped by the operator"),
    "silent": N_("No sound for 3 s"),
    "alert": N_("Interrupted by an alert"),
    "preempted": N_("Pre-empted by an emergency bulletin"),
    "superseded": N_("Replaced by another live session"),
    "max_length": N_("Maximum length reached"),
    "busy": N_("Never on air (an alert was playing)"),
}
"""Why a live session ended at a station (``node_firmware.core.machine``'s reasons)."""
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_MONTH_TYPED = re.compile(r"(\d{1,2})[/.-](\d{4})")
"""``11/2026``: how the page writes a month (month/year, whatever the browser's language)"""


class PeriodError(ValueError):
    """A period the reader wrote that is not one; the message says how to write it."""


def days_window(first: str, last: str) -> tuple[datetime, datetime]:
    """From the first day's 00:00 to the end of the last day, Vietnam time, both included."""
    try:
        start, end = parse_day(first), parse_day(last)
    except ValueError as exc:
        raise PeriodError(gettext("Give the first and the last day, e.g. 25/11/2026.")) from exc
    if end < start:
        raise PeriodError(gettext("The last day is before the first."))
    if end - start >= MAX_WINDOW:
        raise PeriodError(
            gettext("A report covers at most %(days)s days.") % {"days": MAX_WINDOW.days}
        )
    local = [datetime.combine(d, time(), LOCAL_TZ) for d in (start, end + timedelta(days=1))]
    return local[0].astimezone(UTC), local[1].astimezone(UTC)


def month_window(month: str | None, now: datetime) -> tuple[datetime, datetime]:
    """``2026-11`` as [1 Nov 00:00, 1 Dec 00:00) in Vietnam's time; default this month."""
    if month:
        iso, typed = _MONTH.fullmatch(month.strip()), _MONTH_TYPED.fullmatch(month.strip())
        year, number = (
            (int(iso[1]), int(iso[2])) if iso else (int(typed[2]), int(typed[1])) if typed
            else (0, 0)
        )  # fmt: skip
        if not 1 <= number <= 12 or year < 2000:
            raise PeriodError(gettext("The month must be written as 11/2026 (month/year)."))
    else:
        local = now.astimezone(LOCAL_TZ)
        year, number = local.year, local.month
    start = datetime(year, number, 1, tzinfo=LOCAL_TZ)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=LOCAL_TZ)
    return start.astimezone(UTC), end.astimezone(UTC)


def area_chain(session: Session, code: str) -> list[str]:
    """The area and its parents by name, province first: the heading of an official
    report (``Tỉnh Cao Bằng``, ``Phường Thục Phán``; provinces are stored bare)."""
    chain: list[str] = []
    current = session.get(Area, code)
    while current is not None:
        bare = current.level == AreaLevel.PROVINCE and not current.name.startswith(
            ("Tỉnh", "Thành phố")
        )
        chain.insert(
            0, gettext("Province %(name)s") % {"name": current.name} if bare else current.name
        )
        current = session.get(Area, current.parent_code) if current.parent_code else None
    return chain


def duration(ms: int) -> str:
    """Hours of airtime over a month: ``H:MM:SS`` (a month is hundreds of minutes)."""
    total = round(ms / 1000)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


@router.get("/reports", response_class=HTMLResponse)
def reports_page(
    request: Request,
    session: SessionDep,
    context: ContextDep,
    actor: PageActorDep,
    area: Annotated[str | None, Query(max_length=16)] = None,
    month: Annotated[str | None, Query(max_length=16)] = None,
    first: Annotated[str, Query(alias="from", max_length=16)] = "",
    last: Annotated[str, Query(alias="to", max_length=16)] = "",
) -> HTMLResponse:
    """One area, one month (or the days asked for): what each station was asked to play
    and what it played."""
    now = context.clock()
    roots = scope_roots(actor.grants, Action.BROADCAST_READ)
    if area is None and len(roots) == 1:
        area = next(iter(roots))
    scope = report_scope(session, actor, area or None)
    values: dict[str, object] = {
        "actor": actor,
        "area": area or "",
        "month": month or now.astimezone(LOCAL_TZ).strftime("%m/%Y"),
        "areas": sorted(
            area_names(session, visible_areas(actor, Action.BROADCAST_READ, session)).items()
        ),
        "chain": area_chain(session, area) if area else [],
        "first": first,
        "last": last,
    }
    try:
        from_at, to_at = days_window(first, last) if first or last else month_window(month, now)
    except PeriodError as exc:
        values["error"] = str(exc)
        return render(request, "reports.html", values, status.HTTP_422_UNPROCESSABLE_CONTENT)
    grace = timedelta(minutes=context.settings.alarm_item_grace_min)
    report = load_report(session, scope, from_at, to_at, now, grace)
    query = {"format": "csv", "from": from_at.astimezone(LOCAL_TZ).strftime("%Y-%m-%d"),
             "to": to_at.astimezone(LOCAL_TZ).strftime("%Y-%m-%d")}  # fmt: skip
    query["lang"] = current_language()  # the headings in the page's language
    if area:
        query["area"] = area
    values.update(
        report=report,
        chart=outcome_bars(report.stations),
        chart_width=WIDTH,
        bar_h=BAR_H,
        outcomes=[(o, STATE_LABELS.get(o, OUTCOME_LABELS.get(o, o))) for o in SHOWN],
        period_end=to_at - timedelta(seconds=1),
        csv_href="/api/v1/reports/as-run?" + urlencode(query),
        live_csv_href="/api/v1/reports/as-run?" + urlencode({**query, "live": "true"}),
        live_reasons=LIVE_END_LABELS,
        station_names={r.station_id: r.name for r in report.stations},
        duration=duration,
        names=area_names(session, {r.area_code for r in report.stations}),
    )
    return render(request, "reports.html", values)
