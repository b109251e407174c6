"""Alert tables and API models: one alert, one delivery row per targeted station.

The wire id (``alert_id``) is what stations echo in their events; the database id is
what the REST API names. Timestamps on a delivery row are the station's own clock (as
reported); ``updated_at`` is the server's, so the live view can ask "what changed".
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from pydantic import field_validator, model_validator
from sqlalchemy import Index
from sqlmodel import JSON, Column, Field, SQLModel

from loaxa_protocol import AlertSeverity
from server.alerts.logic import AlertState, DeliveryState
from server.db import UTCDateTime, utcnow

MAX_TARGETS = 5000


class PayloadKind(enum.StrEnum):
    CANNED = "canned"
    INLINE = "inline"


def _utc(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class AlertRecord(SQLModel, table=True):
    """One alert as the province issued it (and, once sent, as it went on the wire)."""

    __tablename__ = "alert_record"
    __table_args__ = (
        # One CAP message, one alert: a sender's retry after a time-out (or two copies
        # posted at once) must find this row, never broadcast a second time. API alerts
        # leave both NULL, which a unique index does not compare.
        Index("uq_alert_record_cap_message", "cap_sender", "cap_identifier", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    alert_id: str = Field(unique=True, max_length=64, description="the id on the wire")
    title: str = Field(max_length=200)
    severity: str = Field(max_length=16)
    drill: bool = Field(default=False, description="an exercise: never a real alert")
    state: str = Field(default=AlertState.ACTIVE.value, max_length=24, index=True)
    tone: bool = True
    repeat: int = 2
    gap_s: int = 3
    payload: str = Field(max_length=8, description="canned | inline")
    canned: str | None = Field(default=None, max_length=32, description="library name")
    audio_id: int | None = Field(default=None, foreign_key="audioasset.id")
    text: str | None = Field(default=None, description="what TTS spoke, for the record")
    payload_bytes: int = Field(default=0, description="size of one sealed message on the wire")
    area_codes: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    station_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    topic_targets: list[str] = Field(
        default_factory=list,
        sa_column=Column(JSON),
        description="the minimal cover it was published to: 'area:<code>' or station ids",
    )
    needs_confirmation: bool = False
    created_by: str = Field(max_length=120)
    created_by_user_id: int | None = None
    confirmed_by: str | None = Field(default=None, max_length=120)
    cancelled_by: str | None = Field(default=None, max_length=120)
    source: str = Field(default="api", max_length=8, description="api | cap")
    cap_sender: str | None = Field(default=None, max_length=255)
    cap_identifier: str | None = Field(default=None, max_length=255, index=True)
    cap_sent: datetime | None = _utc(default=None)
    created_at: datetime = _utc(default_factory=utcnow)
    sent_at: datetime | None = _utc(default=None)
    expires_at: datetime = _utc(index=True)
    cancelled_at: datetime | None = _utc(default=None)
    ended_at: datetime | None = _utc(default=None)


class AlertDelivery(SQLModel, table=True):
    """One alert at one station; moved by the station's alert events, never backwards."""

    __tablename__ = "alert_delivery"

    alert_pk: int = Field(foreign_key="alert_record.id", primary_key=True)
    station_id: str = Field(foreign_key="station.id", primary_key=True, index=True)
    area_code: str = Field(max_length=16)
    state: str = Field(default=DeliveryState.PENDING.value, max_length=16)
    received_at: datetime | None = _utc(default=None)
    playing_at: datetime | None = _utc(default=None)
    finished_at: datetime | None = _utc(default=None)
    reason: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=500)
    resent: int = Field(default=0, description="fresh copies sent on the station topic")
    updated_at: datetime = _utc(default_factory=utcnow, index=True)


# ------------------------------------------------------------------ API models


class AlertCreate(SQLModel):
    """What an officer fills in. Exactly one of ``text``, ``audio_id`` or ``canned``."""

    title: str = Field(min_length=1, max_length=200)
    severity: AlertSeverity = AlertSeverity.SEVERE
    text: str | None = Field(
        default=None, min_length=1, max_length=2000, description="spoken by text-to-speech"
    )
    audio_id: int | None = Field(
        default=None, description="an uploaded asset, carried inline (at most 256 KiB)"
    )
    canned: str | None = Field(
        default=None, description="library message: typhoon, flood, dam_release, fire, …"
    )
    tone: bool = Field(default=True, description="attention tone before each repeat")
    repeat: int = Field(default=2, ge=1, le=10)
    gap_s: int = Field(default=3, ge=0, le=60)
    expires_at: datetime | None = Field(
        default=None, description="aware; default now + 2 h, at most 48 h ahead"
    )
    area_codes: list[str] = Field(default_factory=list, max_length=MAX_TARGETS)
    station_ids: list[str] = Field(default_factory=list, max_length=MAX_TARGETS)
    drill: bool = False

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError(
                f"expires_at must include a timezone offset (got {value.isoformat()}), "
                "e.g. 2025-07-01T05:00:00+07:00"
            )
        return value.astimezone(UTC) if value is not None else None

    @model_validator(mode="after")
    def _one_message_and_a_target(self) -> AlertCreate:
        given = [n for n in ("text", "audio_id", "canned") if getattr(self, n) is not None]
        if not given:
            raise ValueError(
                "an alert needs a message: give text (spoken by TTS), audio_id or canned"
            )
        if len(given) > 1:
            raise ValueError(f"give exactly one of text, audio_id or canned (got {given})")
        if not self.area_codes and not self.station_ids:
            raise ValueError("give area_codes and/or station_ids: the alert has no target")
        return self


class PreviewArea(SQLModel):
    code: str
    name: str
    stations: int


class AlertPreview(SQLModel):
    stations: int
    station_ids: list[str]
    areas: list[PreviewArea]
    needs_confirmation: bool


class AlertStationPublic(SQLModel):
    station_id: str
    name: str
    area_code: str
    state: DeliveryState
    received_at: datetime | None
    playing_at: datetime | None
    finished_at: datetime | None
    reason: str | None
    link_status: str
    last_seen_at: datetime | None


class AlertPublic(SQLModel):
    id: int
    alert_id: str
    title: str
    severity: str
    drill: bool
    state: AlertState
    created_by: str
    confirmed_by: str | None
    created_at: datetime
    sent_at: datetime | None
    expires_at: datetime
    cancelled_at: datetime | None
    repeat: int
    gap_s: int
    payload: PayloadKind
    payload_bytes: int
    counts: dict[str, int] = Field(default_factory=dict)


class AlertDetail(AlertPublic):
    stations: list[AlertStationPublic]


class CannedPublic(SQLModel):
    name: str
    title_vi: str
    title_en: str
    duration_ms: int
    audio_id: int
