"""What the ingest worker processes report about themselves, for ``/api/v1/system``.

Workers may run on other machines than the server, so their counters travel through
the one thing every process shares: the database. Each worker upserts its own row about
once a second; a row that stops moving is a worker that stopped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import JSON, Column, Field, SQLModel

from server.db import UTCDateTime


class IngestWorkerState(SQLModel, table=True):
    """One ingest worker (its MQTT client id): when it reported last and its counters."""

    name: str = Field(primary_key=True, max_length=64)
    host: str = Field(max_length=255)
    pid: int
    started_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)
    counters: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
