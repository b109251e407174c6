"""Health tables: raw samples, hourly aggregates, per-station liveness and alarms.

Samples are stamped with the server's receive time (``at``) as well as the station's own
clock (``node_at``): charts, retention and the offline check use the server's clock, so a
station whose clock is wrong still draws a correct chart (and raises a clock alarm).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from server.db import UTCDateTime
from server.health.rules import AlarmKind, AlarmSeverity, AlarmState


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


ACTIVE_STATES = (AlarmState.OPEN.value, AlarmState.ACKNOWLEDGED.value)
"""An alarm in one of these states still stands for a live condition."""


class HealthSample(SQLModel, table=True):
    """One heartbeat as far as it was valid; ``flags`` lists what was dropped and why."""

    __table_args__ = (sa.Index("ix_healthsample_station_at", "station_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    station_id: str = Field(foreign_key="station.id", max_length=63)
    at: datetime = _utc(index=True, description="server receive time")
    node_at: datetime | None = _utc(default=None, description="station clock, when plausible")
    cpu_temp_c: float | None = None
    load_1m: float | None = None
    mem_used_pct: float | None = None
    disk_free_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    disk_total_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    disk_free_pct: float | None = None
    clock_offset_ms: float | None = None
    modem_rssi_dbm: float | None = None
    amp_current_ma: float | None = None
    amp_temp_c: float | None = None
    amp_on: bool | None = None
    flags: list[str] | None = Field(default=None, sa_column=Column(JSON))


class HealthHourly(SQLModel, table=True):
    """min / avg / max / count of one metric of one station over one UTC hour."""

    station_id: str = Field(foreign_key="station.id", primary_key=True, max_length=63)
    metric: str = Field(primary_key=True, max_length=32)
    hour: datetime = _utc(primary_key=True, index=True, description="start of the hour, UTC")
    min: float
    avg: float
    max: float
    count: int


class StationLiveness(SQLModel, table=True):
    """What the status and alarm rules need beyond the Station row, one row per station.

    Kept apart from ``Station`` so health ingestion never widens the station table and
    the heartbeat path writes one narrow row.
    """

    station_id: str = Field(foreign_key="station.id", primary_key=True, max_length=63)
    last_seen_at: datetime | None = _utc(
        default=None, description="server time of the last heartbeat or 'online' status"
    )
    link_at: datetime | None = _utc(
        default=None, description="station time of the last timed status (stale-copy check)"
    )
    fault_kind: str | None = Field(default=None, max_length=32)
    fault_at: datetime | None = _utc(default=None, description="station time of the fault event")
    fault_detail: str | None = Field(default=None, max_length=500)


class Alarm(SQLModel, table=True):
    """One occurrence of one condition at one station; never two active of one kind."""

    __table_args__ = (sa.Index("ix_alarm_station_kind_state", "station_id", "kind", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    station_id: str = Field(foreign_key="station.id", max_length=63)
    kind: str = Field(max_length=32)
    severity: str = Field(max_length=16)
    state: str = Field(default=AlarmState.OPEN.value, max_length=16, index=True)
    detail: str = Field(default="", max_length=500)
    opened_at: datetime = _utc(index=True)
    acknowledged_at: datetime | None = _utc(default=None)
    acknowledged_by: str | None = Field(default=None, max_length=128)
    resolved_at: datetime | None = _utc(default=None)


class AlarmEvent(SQLModel, table=True):
    """A state change of an alarm: who (None = the rules), when, and any note."""

    id: int | None = Field(default=None, primary_key=True)
    alarm_id: int = Field(foreign_key="alarm.id", index=True)
    state: str = Field(max_length=16)
    at: datetime = _utc()
    by: str | None = Field(default=None, max_length=128)
    note: str | None = Field(default=None, max_length=500)


# ------------------------------------------------------------- API models


class AlarmPublic(SQLModel):
    id: int
    station_id: str
    kind: AlarmKind
    severity: AlarmSeverity
    state: AlarmState
    detail: str
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None


class AlarmEventPublic(SQLModel):
    state: AlarmState
    at: datetime
    by: str | None
    note: str | None


class AlarmDetail(AlarmPublic):
    history: list[AlarmEventPublic]


class AcknowledgeBody(SQLModel):
    note: str | None = Field(default=None, max_length=500, description="what is being done")


class SeriesPoint(SQLModel):
    t: datetime = Field(description="start of the bucket, UTC")
    min: float
    avg: float
    max: float
    count: int


class HealthSeries(SQLModel):
    station_id: str
    range: str
    source: str = Field(description="'raw' (buckets of raw samples) or 'hourly' (aggregates)")
    start: datetime
    end: datetime
    bucket_s: int
    series: dict[str, list[SeriesPoint]]


class FleetSummary(SQLModel):
    stations: int
    by_status: dict[str, int]
    open_alarms: dict[str, int] = Field(description="active alarms by severity")
    alarms_visible: bool = Field(description="False when the caller may not read alarms")
