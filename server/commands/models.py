"""A command sent to a station and what came back: the technician's visible result."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Column, Field, SQLModel

from server.db import UTCDateTime, utcnow


class CommandState(enum.StrEnum):
    SENT = "sent"
    DONE = "done"
    FAILED = "failed"


class StationCommand(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    station_id: str = Field(foreign_key="station.id", index=True)
    seq: int = Field(sa_type=sa.BigInteger, index=True, description="the signed command's seq")
    name: str = Field(max_length=40)
    args: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    state: str = Field(default=CommandState.SENT, max_length=16)
    created_by: str = Field(max_length=120)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    replied_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ok: bool | None = None
    detail: str | None = Field(default=None, max_length=500)
    result: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))


class CommandCreate(SQLModel):
    name: str = Field(description="test_tone, set_amp, set_volume, fetch_log, restart")
    args: dict[str, Any] = Field(default_factory=dict)


class CommandPublic(SQLModel):
    id: int
    station_id: str
    name: str
    args: dict[str, Any]
    state: str
    created_by: str
    created_at: datetime
    replied_at: datetime | None
    ok: bool | None
    detail: str | None
    result: dict[str, Any] | None
