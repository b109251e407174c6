"""Reports: the as-run log per station — what was asked, what the stations say they played."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import BaseModel, Field

from server.api.deps import ClockDep, SessionDep, SettingsDep
from server.auth.deps import ActorDep
from server.reports.asrun import (
    LOCAL_TZ,
    ItemOutcome,
    LiveOnStation,
    StationAsRun,
    items_to_csv,
    live_to_csv,
    to_csv,
)
from server.reports.service import MAX_WINDOW, load_report, report_scope

router = APIRouter(prefix="/reports", tags=["reports"])

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class StationRow(BaseModel):
    station_id: str
    name: str
    area_code: str
    planned: int
    played: int
    interrupted: int
    failed: int
    missed: int = Field(description="due, and the station reported no outcome")
    pending: int = Field(description="not due yet")
    unplanned: int = Field(description="outcomes for items the server has no plan record of")
    emergency: int = Field(description="alerts plus plan items of priority 'emergency'")
    emergency_played: int
    drills: int = Field(description="drill alerts, never counted as emergency")
    drills_played: int
    requested_ms: int
    played_ms: int
    played_pct: float | None = Field(description="played time / requested time, percent")
    live: int = Field(description="live sessions that sounded (or were turned away) here")
    live_ms: int = Field(description="how long live sessions sounded here")


class ItemRow(BaseModel):
    station_id: str
    item_id: str
    title: str
    priority: str
    source: str
    start_at: datetime | None
    length_ms: int
    outcome: str
    started_at: datetime | None
    finished_at: datetime | None
    played_ms: int
    reason: str | None
    planned: bool


class LiveRow(BaseModel):
    """One live session at one station."""

    station_id: str
    session_id: str
    title: str
    created_by: str = Field(description="who went live")
    started_at: datetime | None = Field(description="first sounded here; null: never (busy)")
    finished_at: datetime | None = Field(description="last went silent here; null: on air")
    sounded_ms: int = Field(description="how long it sounded here, over all its rounds")
    rounds: int = Field(description="times it began to sound (an alert or a pause stops it)")
    reason: str | None = Field(description="why it ended here: stopped, silent, alert, busy…")
    on_air: bool


class AsRunPublic(BaseModel):
    from_at: datetime = Field(description="window start, UTC (inclusive)")
    to_at: datetime = Field(description="window end, UTC (exclusive)")
    from_local: str = Field(description="window start in Asia/Ho_Chi_Minh")
    to_local: str
    area_code: str | None
    generated_at: datetime
    stations: list[StationRow]
    totals: StationRow
    items: list[ItemRow] | None = Field(
        default=None, description="one row per item, with items=true"
    )
    live: list[LiveRow] = Field(
        default_factory=list, description="one row per live session and station"
    )


def parse_instant(name: str, value: str) -> datetime:
    """``YYYY-MM-DD`` (local midnight) or ISO 8601; without an offset the time is local."""
    text = value.strip()
    try:
        if _DATE.fullmatch(text):
            parsed = datetime.fromisoformat(text).replace(tzinfo=LOCAL_TZ)
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=LOCAL_TZ)
    except ValueError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{name}: {value!r} is not a date (2026-11-25) or a date-time "
            "(2026-11-25T05:00+07:00; without an offset it is Vietnam time)",
        ) from exc
    return parsed.astimezone(UTC)


def report_window(
    raw_from: str | None, raw_to: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """The window asked for; by default today in Vietnam, one day when one end is given."""
    day = timedelta(days=1)
    start = parse_instant("from", raw_from) if raw_from else None
    end = parse_instant("to", raw_to) if raw_to else None
    if start is None and end is None:
        midnight = now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
        start = midnight.astimezone(UTC)
    if start is None:
        assert end is not None
        start = end - day
    if end is None:
        end = start + day
    if end <= start:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"to: {end.astimezone(LOCAL_TZ).isoformat()} is not after from "
            f"{start.astimezone(LOCAL_TZ).isoformat()}",
        )
    if end - start > MAX_WINDOW:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"to: the window is {(end - start).days} days; at most {MAX_WINDOW.days} days "
            "per report",
        )
    return start, end


def _station_row(row: StationAsRun) -> StationRow:
    return StationRow(
        station_id=row.station_id,
        name=row.name,
        area_code=row.area_code,
        planned=row.planned,
        played=row.played,
        interrupted=row.interrupted,
        failed=row.failed,
        missed=row.missed,
        pending=row.pending,
        unplanned=row.unplanned,
        emergency=row.emergency,
        emergency_played=row.emergency_played,
        drills=row.drills,
        drills_played=row.drills_played,
        requested_ms=row.requested_ms,
        played_ms=row.played_ms,
        played_pct=row.played_pct,
        live=row.live,
        live_ms=row.live_ms,
    )


def _item_row(item: ItemOutcome) -> ItemRow:
    return ItemRow.model_validate(item, from_attributes=True)


def _live_row(row: LiveOnStation) -> LiveRow:
    return LiveRow.model_validate(row, from_attributes=True)


@router.get(
    "/as-run",
    response_model=AsRunPublic,
    responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}},
)
def read_as_run(
    session: SessionDep,
    actor: ActorDep,
    clock: ClockDep,
    settings: SettingsDep,
    area: Annotated[
        str | None, Query(max_length=16, description="area code; default: all you may see")
    ] = None,
    from_: Annotated[
        str | None,
        Query(alias="from", description="2026-11-25 (Vietnam midnight) or ISO 8601"),
    ] = None,
    to: Annotated[str | None, Query(description="exclusive end; default from + 1 day")] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
    items: Annotated[
        bool, Query(description="one row per item (JSON: an extra list; CSV: instead)")
    ] = False,
    lang: Annotated[
        Literal["vi", "en"] | None,
        Query(description="CSV column headings in this language; default: machine names"),
    ] = None,
    live: Annotated[
        bool, Query(description="CSV: one row per live session and station, instead")
    ] = False,
) -> AsRunPublic | Response:
    """Per station: items planned, played, interrupted, failed, missed; emergency items;
    played time against requested time; live sessions per station (who went live, when,
    how long it sounded). Only stations in areas you may read."""
    now = clock()
    scope = report_scope(session, actor, area)
    from_at, to_at = report_window(from_, to, now)
    # The same grace as the "item not played" alarm: the report and the alarm agree.
    grace = timedelta(minutes=settings.alarm_item_grace_min)
    report = load_report(session, scope, from_at, to_at, now, grace)
    if format == "csv":
        if items and live:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "live: one CSV per download; ask for items=true or live=true, not both",
            )
        local = from_at.astimezone(LOCAL_TZ).strftime("%Y%m%d-%H%M")
        kind = "items" if items else "live" if live else "stations"
        name = f"as-run-{kind}-{area or 'all'}-{local}.csv"
        if items:
            text = items_to_csv(report, lang)
        else:
            text = live_to_csv(report, lang) if live else to_csv(report, lang)
        return Response(
            "\ufeff" + text,  # BOM: spreadsheet programs then read Vietnamese names
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )
    return AsRunPublic(
        from_at=from_at,
        to_at=to_at,
        from_local=from_at.astimezone(LOCAL_TZ).isoformat(),
        to_local=to_at.astimezone(LOCAL_TZ).isoformat(),
        area_code=area,
        generated_at=now,
        stations=[_station_row(r) for r in report.stations],
        totals=_station_row(report.totals),
        items=[_item_row(i) for i in report.items] if items else None,
        live=[_live_row(r) for r in report.live],
    )
