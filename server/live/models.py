"""One row per live session: who spoke, to which stations, how long, and its recording."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from server.db import UTCDateTime


class LiveSession(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=16, description="16 hex digits, in every frame")
    title: str = Field(default="", max_length=200)
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(sa_type=UTCDateTime)
    targets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    station_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    ends_by: datetime = Field(sa_type=UTCDateTime, description="its maximum length")
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    end_reason: str | None = Field(default=None, max_length=40)
    frames: int = 0
    audio_id: int | None = Field(default=None, foreign_key="audioasset.id")
    """the session's recording, once archived"""
