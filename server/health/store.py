"""Health history in the database: hourly aggregation, pruning and chart series.

The windows and the arithmetic are pure (``server.health.retention``); this module only
reads and writes rows. Each aggregated hour is its own transaction, replacing whatever
an earlier, interrupted run left for that hour, so a crash mid-way costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert
from sqlmodel import Session, col, select

from server.db import session_scope
from server.health.models import HealthHourly, HealthSample, HealthSeries, SeriesPoint
from server.health.retention import (
    HOUR,
    Summary,
    cutoffs,
    floor_to,
    hours_to_aggregate,
    summarise,
)
from server.health.validate import METRICS
from server.settings import Settings


@dataclass(frozen=True)
class ChartRange:
    span: timedelta
    bucket: timedelta
    source: str


RANGES = {
    "24h": ChartRange(timedelta(hours=24), timedelta(minutes=5), "raw"),
    "7d": ChartRange(timedelta(days=7), HOUR, "hourly"),
}


def _metric_points(
    rows: Iterable[Any], metrics: Sequence[str], key_station: bool
) -> Iterable[tuple[Any, datetime, float]]:
    """``(key, at, value)`` for every non-null metric of rows ``(station_id, at, *metrics)``."""
    for row in rows:
        station_id, at, *values = row
        for metric, value in zip(metrics, values, strict=True):
            if value is not None:
                yield ((station_id, metric) if key_station else metric), at, float(value)


def _sample_rows(
    session: Session, start: datetime, end: datetime, metrics: Sequence[str], station_id: str | None
) -> Iterable[Any]:
    columns = [getattr(HealthSample, m) for m in metrics]
    query = select(HealthSample.station_id, HealthSample.at, *columns).where(
        col(HealthSample.at) >= start, col(HealthSample.at) < end
    )
    if station_id is not None:
        query = query.where(HealthSample.station_id == station_id)
    return session.execute(query)


def aggregated_until(session: Session) -> datetime | None:
    """The end of the last aggregated hour, None before the first aggregation."""
    last = session.exec(select(func.max(HealthHourly.hour))).one()
    return last + HOUR if last is not None else None


def aggregate_hour(session: Session, hour: datetime) -> int:
    """(Re)compute every station's aggregates for one hour; how many rows were written."""
    rows = _sample_rows(session, hour, hour + HOUR, METRICS, None)
    groups = summarise(_metric_points(rows, METRICS, key_station=True), HOUR)
    session.execute(delete(HealthHourly).where(col(HealthHourly.hour) == hour))
    values = [
        {
            "station_id": station_id,
            "metric": metric,
            "hour": hour,
            "min": s.min,
            "avg": s.avg,
            "max": s.max,
            "count": s.count,
        }
        for ((station_id, metric), _slot), s in groups.items()
    ]
    if values:
        session.execute(insert(HealthHourly), values)
    return len(values)


def aggregate_complete_hours(engine: Engine, now: datetime, settings: Settings) -> int:
    """Aggregate every complete hour not aggregated yet; returns how many hours."""
    with Session(engine) as session:
        done_until = aggregated_until(session)
        oldest = session.exec(select(func.min(HealthSample.at))).one()
    hours = hours_to_aggregate(now, done_until, oldest, timedelta(days=settings.health_raw_days))
    for hour in hours:
        with session_scope(engine) as session:
            aggregate_hour(session, hour)
    return len(hours)


def prune(engine: Engine, now: datetime, settings: Settings) -> tuple[int, int]:
    """Delete samples and aggregates past retention; (raw rows, hourly rows) deleted."""
    with session_scope(engine) as session:
        limits = cutoffs(
            now,
            timedelta(days=settings.health_raw_days),
            timedelta(days=settings.health_hourly_days),
            aggregated_until(session),
        )
        raw = session.execute(delete(HealthSample).where(col(HealthSample.at) < limits.raw_before))
        hourly = session.execute(
            delete(HealthHourly).where(col(HealthHourly.hour) < limits.hourly_before)
        )
    return int(raw.rowcount or 0), int(hourly.rowcount or 0)  # type: ignore[attr-defined]


def _points(groups: dict[tuple[str, datetime], Summary], metric: str) -> list[SeriesPoint]:
    return [
        SeriesPoint(t=slot, min=s.min, avg=s.avg, max=s.max, count=s.count)
        for (name, slot), s in sorted(groups.items(), key=lambda item: item[0][1])
        if name == metric
    ]


def read_series(
    session: Session, station_id: str, range_name: str, metrics: Sequence[str], now: datetime
) -> HealthSeries:
    """Chart data for one station: ``[{t, min, avg, max, count}]`` per metric.

    ``24h`` summarises raw samples in 5-minute buckets; ``7d`` reads hourly aggregates,
    completed with raw samples for the hours not aggregated yet, so the chart reaches now.
    """
    chart = RANGES[range_name]
    start = floor_to(now - chart.span, chart.bucket)
    if chart.source == "raw":
        rows = _sample_rows(session, start, now + chart.bucket, metrics, station_id)
        groups = summarise(_metric_points(rows, metrics, key_station=False), chart.bucket)
    else:
        groups = _hourly_groups(session, station_id, metrics, start)
        fresh_from = max(start, aggregated_until(session) or start)
        rows = _sample_rows(session, fresh_from, now + HOUR, metrics, station_id)
        fresh = summarise(_metric_points(rows, metrics, key_station=False), HOUR)
        groups.update((slot, s) for slot, s in fresh.items() if slot not in groups)
    return HealthSeries(
        station_id=station_id,
        range=range_name,
        source=chart.source,
        start=start,
        end=now,
        bucket_s=int(chart.bucket.total_seconds()),
        series={metric: _points(groups, metric) for metric in metrics},
    )


def _hourly_groups(
    session: Session, station_id: str, metrics: Sequence[str], start: datetime
) -> dict[tuple[str, datetime], Summary]:
    query = select(HealthHourly).where(
        HealthHourly.station_id == station_id,
        col(HealthHourly.metric).in_(metrics),
        col(HealthHourly.hour) >= start,
    )
    return {
        (row.metric, row.hour): Summary(row.min, row.max, row.avg * row.count, row.count)
        for row in session.exec(query)
    }
