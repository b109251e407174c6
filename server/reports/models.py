"""The as-run report's table: what each station was told to play (see ``planned``)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.db import UTCDateTime, utcnow


class PlannedItem(SQLModel, table=True):
    """One plan item at one station, as the latest plan that carried it described it."""

    __table_args__ = (sa.UniqueConstraint("station_id", "item_id", name="uq_planned_item"),)

    id: int | None = Field(default=None, primary_key=True)
    station_id: str = Field(max_length=63, index=True)
    item_id: str = Field(max_length=64)
    start_at: datetime = Field(sa_type=UTCDateTime, index=True, description="UTC")
    length_ms: int = Field(ge=0, description="audio duration, or a stream's window")
    priority: str = Field(max_length=16)
    title: str = Field(default="", max_length=200)
    source: str = Field(max_length=16, description="'audio' or 'stream'")
    sha256: str | None = Field(
        default=None, max_length=64, description="the audio, or the stream's fallback"
    )
    first_plan_seq: int = Field(sa_type=sa.BigInteger)
    last_plan_seq: int = Field(sa_type=sa.BigInteger)
    withdrawn_at: datetime | None = Field(
        default=None,
        sa_type=UTCDateTime,
        description="when a newer plan stopped carrying it before its start",
    )
    recorded_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
    updated_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
