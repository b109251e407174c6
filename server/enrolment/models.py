"""Enrolment tables: one-time claim codes and the join requests made with them.

A claim code is stored only as its sha256 (like an API token): a database dump does
not let anyone enrol a station. A request keeps the station's public key, never a
secret of the station; the answer sealed to that key is stored once approved (only
that station's private key opens it), so a station whose first download was cut off
can ask again.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from server.db import UTCDateTime


class RequestState(enum.StrEnum):
    """pending → approved → collected; pending → rejected."""

    PENDING = "pending"
    APPROVED = "approved"
    COLLECTED = "collected"
    REJECTED = "rejected"


class ClaimCode(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    code_hash: str = Field(unique=True, max_length=64, description="sha256 of the code")
    hint: str = Field(max_length=8, description="its last four symbols, to tell codes apart")
    area_code: str = Field(foreign_key="area.code", index=True, description="where it may join")
    created_at: datetime = Field(sa_type=UTCDateTime)
    created_by: str = Field(max_length=200)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class EnrolmentRequest(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="claimcode.id", unique=True)
    public_key: str = Field(max_length=64, description="the station's X25519 key, base64url")
    hostname: str = Field(default="", max_length=100)
    source_ip: str | None = Field(default=None, max_length=64)
    requested_at: datetime = Field(sa_type=UTCDateTime)
    last_poll_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    state: str = Field(default=RequestState.PENDING.value, max_length=16, index=True)
    station_id: str | None = Field(default=None, foreign_key="station.id")
    decided_by: str | None = Field(default=None, max_length=200)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    sealed: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
