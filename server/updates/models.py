"""Releases and rollouts: what the server stores and how far each rollout has gone.

A release is kept as its signed manifest (the exact text the stations verify) and its
files on disk under ``<data_dir>/releases/<version>/``. A rollout sends one release to
the stations of an area, canaries first; each station's row follows what the station
reported (``update_*`` events).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlmodel import Field, SQLModel

from server.db import UTCDateTime, utcnow


class RolloutState(enum.StrEnum):
    """canary → rolling → done; canary → failed (a canary went back); any → stopped."""

    CANARY = "canary"
    ROLLING = "rolling"
    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"


class MemberState(enum.StrEnum):
    """One station in a rollout, as far as its reports tell."""

    WAITING = "waiting"
    """not sent yet (the rest, while the canaries prove the release)"""
    SENT = "sent"
    DOWNLOADING = "downloading"
    INSTALLED = "installed"
    SWITCHING = "switching"
    UPDATED = "updated"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


FINAL = frozenset({MemberState.UPDATED, MemberState.ROLLED_BACK, MemberState.FAILED})
ACTIVE = frozenset({RolloutState.CANARY, RolloutState.ROLLING})


class Release(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    version: str = Field(unique=True, max_length=64)
    manifest: str = Field(description="the signed manifest, byte for byte as stations get it")
    kid: str = Field(max_length=64, description="the release key that signed it")
    size_bytes: int
    file_count: int
    created_by: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Rollout(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    release_id: int = Field(foreign_key="release.id", index=True)
    area_code: str = Field(foreign_key="area.code")
    canary_pct: int = Field(ge=0, le=100)
    canary_minutes: float = Field(ge=0, description="canaries healthy this long promote it")
    health_deadline_s: int = Field(description="a station's trial must be healthy within this")
    state: str = Field(default=RolloutState.CANARY, max_length=16, index=True)
    detail: str | None = Field(default=None, max_length=500)
    started_by: str = Field(max_length=200)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    promoted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    stopped_by: str | None = Field(default=None, max_length=200)


class RolloutMember(SQLModel, table=True):
    rollout_id: int = Field(foreign_key="rollout.id", primary_key=True)
    station_id: str = Field(foreign_key="station.id", primary_key=True)
    canary: bool = False
    state: str = Field(default=MemberState.WAITING, max_length=16)
    version_before: str | None = Field(default=None, max_length=64)
    sends: int = 0
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    """when the station last reported on this rollout"""
    healthy_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str | None = Field(default=None, max_length=40)
    detail: str | None = Field(default=None, max_length=500)
