"""Station health for charts and the fleet overview."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status

from server.api.deps import ClockDep, SessionDep
from server.api.stations import read_visible_station
from server.auth.deps import ActorDep, authorize, visible_areas
from server.auth.permissions import Action, allowed_somewhere
from server.health.alarms import active_alarm_counts, status_counts
from server.health.models import FleetSummary, HealthSeries
from server.health.rules import AlarmSeverity
from server.health.store import read_series
from server.health.validate import METRICS

router = APIRouter(tags=["health"])


@router.get("/stations/{station_id}/health", response_model=HealthSeries)
def read_station_health(
    station_id: str,
    session: SessionDep,
    actor: ActorDep,
    clock: ClockDep,
    chart_range: Annotated[Literal["24h", "7d"], Query(alias="range")] = "24h",
    metric: Annotated[list[str] | None, Query(description="repeat for several")] = None,
) -> HealthSeries:
    """min / avg / max per bucket: 5-minute buckets of raw samples (24h) or hours (7d)."""
    read_visible_station(session, actor, station_id)
    metrics = metric or list(METRICS)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"unknown metric(s) {unknown}; known: {', '.join(METRICS)}",
        )
    return read_series(session, station_id, chart_range, metrics, clock())


@router.get("/fleet/summary", response_model=FleetSummary)
def read_fleet_summary(session: SessionDep, actor: ActorDep) -> FleetSummary:
    """Stations by status and active alarms by severity, in the caller's areas."""
    authorize(actor, Action.STATION_READ, None, session)
    by_status = status_counts(session, visible_areas(actor, Action.STATION_READ, session))
    alarms_visible = allowed_somewhere(actor.grants, Action.ALARM_READ)
    open_alarms = (
        active_alarm_counts(session, visible_areas(actor, Action.ALARM_READ, session))
        if alarms_visible
        else {severity.value: 0 for severity in AlarmSeverity}
    )
    return FleetSummary(
        stations=sum(by_status.values()),
        by_status=by_status,
        open_alarms=open_alarms,
        alarms_visible=alarms_visible,
    )
