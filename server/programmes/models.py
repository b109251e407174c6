"""Tables of programmes, station groups and per-area approval rules, and their API views.

A programme's definition is stored whole as the validated ``ProgrammeSpec`` JSON (what
the operator wrote, so ``PUT`` with the same body changes nothing); the columns beside it
are what queries need: owner area, priority, state, and the stations it reaches
(``ProgrammeStation``, so a change knows exactly which stations' plans to republish).
Area and group targets are live: a station registered in a targeted area, or added to a
targeted group, is taken in when that happens (``server.programmes.reach``); a station
whose programmes would then clash keeps the earlier-approved one and holds the other
(``ProgrammeHold``, reported on the programme).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from loaxa_protocol import Priority
from server.db import UTCDateTime, utcnow
from server.models import _enum_type
from server.programmes.approval import ProgrammeState
from server.programmes.spec import ScheduleFile


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class Programme(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=63, description="stable name for re-applying")
    title: str = Field(max_length=120)
    area_code: str = Field(foreign_key="area.code", index=True, description="owning area")
    priority: Priority = Field(default=Priority.NORMAL, sa_type=_enum_type(Priority))
    proposal: bool = Field(default=False, description="a province proposal; never airs")
    public: bool = Field(
        default=True,
        sa_column_kwargs={"server_default": sa.true()},
        description="residents may hear it again on the commune's public page once aired",
    )
    proposal_of: int | None = Field(
        default=None, foreign_key="programme.id", description="the proposal this was accepted from"
    )
    state: ProgrammeState = Field(
        default=ProgrammeState.DRAFT, sa_type=_enum_type(ProgrammeState), index=True
    )
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    rendered: dict[str, int] = Field(
        default_factory=dict,
        sa_column=Column(JSON, nullable=False),
        description="item number → audio asset id of its text-to-speech rendering",
    )
    duration_ms: int = Field(default=0, description="length of one occurrence")
    reject_reason: str | None = Field(default=None, max_length=500)
    created_by: str = Field(max_length=128)
    updated_by: str = Field(max_length=128)
    submitted_by: str | None = Field(default=None, max_length=128)
    approved_by: str | None = Field(default=None, max_length=128)
    created_at: datetime = _utc(default_factory=utcnow)
    updated_at: datetime = _utc(default_factory=utcnow)
    state_at: datetime = _utc(default_factory=utcnow)
    approved_spec: dict[str, Any] | None = Field(
        default=None,
        sa_column=Column(JSON, nullable=True),
        description="the spec as last approved, so the next approver sees what changed",
    )
    approved_stations: list[str] | None = Field(
        default=None,
        sa_column=Column(JSON, nullable=True),
        description="the stations it reached when last approved",
    )
    approved_at: datetime | None = _utc(default=None, nullable=True)


class ProgrammeStation(SQLModel, table=True):
    """A station a programme reaches (its targets, resolved at save and kept up to date)."""

    programme_id: int = Field(foreign_key="programme.id", primary_key=True)
    station_id: str = Field(foreign_key="station.id", primary_key=True, index=True)


class ProgrammeHold(SQLModel, table=True):
    """A station the programme's targets reach but that it does not play: taking it in
    (a station registered later, a group changed) would clash at the same priority with
    a programme that was there first. Retried whenever the targets are resolved again."""

    programme_id: int = Field(foreign_key="programme.id", primary_key=True)
    station_id: str = Field(foreign_key="station.id", primary_key=True, index=True)
    reason: str = Field(max_length=1000, description="the clash, as a save would report it")
    since: datetime = _utc(default_factory=utcnow)


class StationGroup(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True, max_length=63)
    title: str = Field(default="", max_length=120)
    area_code: str = Field(foreign_key="area.code", index=True, description="owning area")
    created_at: datetime = _utc(default_factory=utcnow)


class StationGroupMember(SQLModel, table=True):
    group_id: int = Field(foreign_key="stationgroup.id", primary_key=True)
    station_id: str = Field(foreign_key="station.id", primary_key=True)


class ApprovalRule(SQLModel, table=True):
    """Programmes owned by ``area_code`` (or below it, unless a nearer rule exists) are
    approved by someone holding ``programme.approve`` over ``approver_area_code``."""

    area_code: str = Field(foreign_key="area.code", primary_key=True)
    approver_area_code: str = Field(foreign_key="area.code")
    updated_by: str = Field(max_length=128)
    updated_at: datetime = _utc(default_factory=utcnow)


# ------------------------------------------------------------------ API views


class ProgrammePublic(SQLModel):
    id: int
    key: str
    title: str
    area_code: str
    priority: Priority
    proposal: bool
    proposal_of: int | None
    public: bool = True
    state: ProgrammeState
    spec: dict[str, Any]
    rendered: dict[str, int]
    duration_ms: int
    reject_reason: str | None
    created_by: str
    updated_by: str
    submitted_by: str | None
    approved_by: str | None
    created_at: datetime
    updated_at: datetime
    state_at: datetime


class HeldStation(SQLModel):
    station_id: str
    reason: str
    since: datetime


class ProgrammeDetail(ProgrammePublic):
    stations: list[str]
    held: list[HeldStation] = Field(
        default_factory=list,
        description="stations its targets reach that it does not play (a clash; see reason)",
    )
    next_occurrences: list[datetime] = Field(description="the next few starts, UTC")
    warnings: list[str] = Field(default_factory=list, description="e.g. a stream not reachable")
    changed: bool = Field(default=True, description="False when a PUT changed nothing")


class ProgrammeBatch(ScheduleFile):
    """A whole schedule file (groups and programmes, audio by ``audio_id``), applied all
    or nothing: every check of every part runs before anything changes."""

    submit: bool = Field(default=False, description="submit new or changed drafts for approval")
    dry_run: bool = Field(default=False, description="check everything, change nothing")


class BatchGroupOutcome(SQLModel):
    name: str
    action: str = Field(description="created, updated or unchanged")
    id: int | None


class BatchProgrammeOutcome(SQLModel):
    key: str
    action: str = Field(description="created, updated or unchanged")
    programme: ProgrammeDetail


class BatchResult(SQLModel):
    applied: bool = Field(description="False for a dry run")
    groups: list[BatchGroupOutcome]
    programmes: list[BatchProgrammeOutcome]


class BatchError(SQLModel):
    where: str = Field(description="e.g. programmes[3] (1-based, as in the file)")
    key: str
    status: int
    detail: str
    code: str = Field(default="", description="machine-readable reason, when there is one")


class RejectBody(SQLModel):
    reason: str = Field(min_length=3, max_length=500, description="told to the operator")


class AcceptBody(SQLModel):
    area_code: str = Field(description="the commune taking the proposal into its programme")
    key: str | None = Field(default=None, description="key of the copy; default <key>.<area>")


class OccurrencePublic(SQLModel):
    start_at: datetime
    end_at: datetime
    start_local: str
    end_local: str
    outcomes: dict[str, int] = Field(
        default_factory=dict,
        description="station reports for this occurrence's items: played, interrupted, "
        "failed, stream_unreachable → count (empty until it has aired)",
    )


class TimelineEntry(SQLModel):
    start_at: datetime
    end_at: datetime
    start_local: str
    end_local: str
    kind: str = Field(description="audio, stream, silence")
    title: str
    item_id: str | None = Field(description="plan item id; None for silence")
    priority: Priority
    volume: int | None
    programme_id: int | None
    broadcast_id: int | None
    state: str = Field(description="the programme's state, or 'scheduled' for a broadcast")
    on_air: bool = Field(description="in the station's plan (approved), not just drafted")
    preempted_by: str | None = Field(
        default=None, description="a higher-priority item that cuts into this one"
    )


class Timeline(SQLModel):
    station_id: str
    date: str
    entries: list[TimelineEntry]


class StationGroupCreate(SQLModel):
    name: str = Field(regex=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    title: str = Field(default="", max_length=120)
    area_code: str
    station_ids: list[str] = Field(min_length=1, max_length=1000)


class StationGroupUpdate(SQLModel):
    title: str | None = Field(default=None, max_length=120)
    station_ids: list[str] = Field(min_length=1, max_length=1000)


class StationGroupPublic(SQLModel):
    id: int
    name: str
    title: str
    area_code: str
    station_ids: list[str]
    created_at: datetime


class ApprovalRuleBody(SQLModel):
    approver_area_code: str = Field(
        description="approvers holding programme.approve over this area sign off"
    )


class ApprovalRulePublic(SQLModel):
    area_code: str
    approver_area_code: str
    updated_by: str
    updated_at: datetime


ProgrammeTables = (
    Programme,
    ProgrammeStation,
    ProgrammeHold,
    StationGroup,
    StationGroupMember,
    ApprovalRule,
)
