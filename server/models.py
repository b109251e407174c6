"""Tables and API models, one family per entity (Base / Create / table / Public).

Every timestamp column is ``UTCDateTime`` (see ``server.db``): stored as UTC,
returned aware. States are stored as their string values, so a PostgreSQL
migration never has to alter an enum type to add one.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import field_validator, model_validator
from sqlmodel import JSON, Column, Field, SQLModel

from loaxa_protocol import Priority
from server.db import UTCDateTime, utcnow

STATION_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"


def _enum_type(enum_cls: type[enum.Enum]) -> sa.Enum:
    return sa.Enum(
        enum_cls,
        native_enum=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


def _utc_column(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class AreaLevel(enum.StrEnum):
    PROVINCE = "province"
    DISTRICT = "district"
    COMMUNE = "commune"


class StationStatus(enum.StrEnum):
    """Derived by ``server.health.status``: ``degraded`` is online with a warning alarm open."""

    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


class TargetState(enum.StrEnum):
    """Where one broadcast stands at one station, in the order it normally advances."""

    PLANNED = "planned"
    DELIVERED = "delivered"
    FETCHED = "fetched"
    PLAYING = "playing"
    PLAYED = "played"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


# ------------------------------------------------------------------ areas


class AreaBase(SQLModel):
    code: str = Field(primary_key=True, max_length=16, description="official unit code")
    name: str = Field(max_length=200, description="official name, e.g. 'Xã Cao Bồ'")
    level: AreaLevel = Field(sa_type=_enum_type(AreaLevel))
    parent_code: str | None = Field(
        default=None, foreign_key="area.code", index=True, description="None for a province"
    )


class Area(AreaBase, table=True):
    pass


class AreaPublic(AreaBase):
    pass


# --------------------------------------------------------------- stations


class StationBase(SQLModel):
    name: str = Field(min_length=1, max_length=200, description="e.g. 'Cụm loa thôn Nà Rị'")
    area_code: str = Field(foreign_key="area.code", index=True, description="commune or ward")
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)


class StationCreate(StationBase):
    id: str | None = Field(
        default=None,
        description="slug such as 'cb-st-001'; generated from the area when omitted",
    )

    @field_validator("id")
    @classmethod
    def _slug(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(STATION_ID_PATTERN, value):
            raise ValueError(
                f"id {value!r} must be 2-63 lower-case letters, digits or '-', "
                "starting with a letter or digit"
            )
        if value == "loaxa-server":
            raise ValueError("id 'loaxa-server' is the server's own broker account")
        return value


class Station(StationBase, table=True):
    id: str = Field(primary_key=True, max_length=63)
    mqtt_username: str = Field(unique=True, max_length=64)
    mqtt_password_hash: str = Field(description="mosquitto $7$ PBKDF2-SHA512 format")
    created_at: datetime = _utc_column(default_factory=utcnow)
    status: StationStatus = Field(default=StationStatus.UNKNOWN, sa_type=_enum_type(StationStatus))
    status_at: datetime | None = _utc_column(default=None)
    last_health: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    last_health_at: datetime | None = _utc_column(default=None)


class StationPublic(StationBase):
    id: str
    mqtt_username: str
    created_at: datetime
    status: StationStatus
    status_at: datetime | None
    last_health: dict[str, Any] | None
    last_health_at: datetime | None


class MqttCredentials(SQLModel):
    username: str
    password: str = Field(description="shown once; only its hash is stored")


class TrustedKeyPublic(SQLModel):
    kid: str
    public_key: str
    purposes: list[str]
    valid_until: datetime | None = None


class StationRegistered(SQLModel):
    """The answer to registration: everything a technician needs to set up the node."""

    station: StationPublic
    mqtt: MqttCredentials
    trusted_keys: list[TrustedKeyPublic]
    node_config: dict[str, Any] = Field(
        description="validates as loaxa_protocol.station_config.NodeConfig"
    )


# ------------------------------------------------------------------ audio


class AudioAsset(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(unique=True, max_length=64, description="of the encoded file")
    source_sha256: str = Field(
        index=True, max_length=64, description="of the upload, to answer repeats cheaply"
    )
    size_bytes: int
    duration_ms: int
    codec: str = Field(max_length=16)
    mime_type: str = Field(max_length=64)
    original_filename: str = Field(max_length=255)
    lufs_before: float | None
    lufs_after: float
    true_peak_before_dbtp: float
    true_peak_after_dbtp: float
    gain_db: float
    sample_rate: int
    library: str | None = Field(
        default=None,
        max_length=64,
        unique=True,
        description="name in the canned library (e.g. 'alert:typhoon'); every station keeps "
        "these cached ahead of need",
    )
    created_at: datetime = _utc_column(default_factory=utcnow)


class AudioPublic(SQLModel):
    id: int
    sha256: str
    size_bytes: int
    duration_ms: int
    codec: str
    mime_type: str
    original_filename: str
    lufs_before: float | None
    lufs_after: float
    true_peak_before_dbtp: float
    true_peak_after_dbtp: float
    gain_db: float
    sample_rate: int
    created_at: datetime


class AudioUploaded(AudioPublic):
    created: bool = Field(description="False when identical audio was already stored")


# ------------------------------------------------------------- broadcasts


class BroadcastBase(SQLModel):
    audio_id: int = Field(foreign_key="audioasset.id", index=True)
    start_at: datetime = _utc_column(index=True, description="absolute start, UTC")
    priority: Priority = Field(default=Priority.NORMAL, sa_type=_enum_type(Priority))
    title: str = Field(default="", max_length=200)


class BroadcastCreate(SQLModel):
    audio_id: int
    start_at: datetime = Field(description="ISO 8601 with an offset, e.g. 2025-07-01T05:00+07:00")
    priority: Priority = Priority.NORMAL
    title: str = Field(default="", max_length=200)
    station_ids: list[str] = Field(default_factory=list)
    area_codes: list[str] = Field(
        default_factory=list, description="every station in each area's subtree"
    )

    @field_validator("start_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"start_at must include a timezone offset (got {value.isoformat()}), "
                "e.g. 2025-07-01T05:00:00+07:00"
            )
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _some_target(self) -> BroadcastCreate:
        if not self.station_ids and not self.area_codes:
            raise ValueError("give station_ids and/or area_codes: the broadcast has no target")
        return self


class Broadcast(BroadcastBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _utc_column(default_factory=utcnow)


class BroadcastTarget(SQLModel, table=True):
    """One broadcast at one station; advanced by the station's events, never backwards."""

    broadcast_id: int = Field(foreign_key="broadcast.id", primary_key=True)
    station_id: str = Field(foreign_key="station.id", primary_key=True, index=True)
    state: TargetState = Field(default=TargetState.PLANNED, sa_type=_enum_type(TargetState))
    reason: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=500)
    first_plan_seq: int | None = Field(
        default=None,
        sa_type=sa.BigInteger,
        description="first plan that carried this item; a plan_accepted at or after it "
        "means the station has it",
    )
    state_at: datetime | None = _utc_column(
        default=None, description="station clock of the event that set the state"
    )
    delivered_at: datetime | None = _utc_column(default=None)
    fetched_at: datetime | None = _utc_column(default=None)
    started_at: datetime | None = _utc_column(default=None)
    finished_at: datetime | None = _utc_column(default=None)
    updated_at: datetime = _utc_column(default_factory=utcnow)


class TargetPublic(SQLModel):
    station_id: str
    state: TargetState
    reason: str | None
    detail: str | None
    delivered_at: datetime | None
    fetched_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


class BroadcastPublic(BroadcastBase):
    id: int
    created_at: datetime


class BroadcastDetail(BroadcastPublic):
    targets: list[TargetPublic]
    counts: dict[str, int] = Field(description="number of stations in each state")


# ----------------------------------------------------------- event log


class StationEvent(SQLModel, table=True):
    """Every event a station reported, as reported: the technician's audit trail."""

    id: int | None = Field(default=None, primary_key=True)
    station_id: str = Field(foreign_key="station.id", index=True)
    kind: str = Field(max_length=32)
    item_id: str | None = Field(default=None, max_length=64)
    plan_seq: int | None = Field(default=None, sa_type=sa.BigInteger)
    reason: str | None = Field(default=None, max_length=64)
    detail: str | None = Field(default=None, max_length=500)
    at: datetime = _utc_column(description="station clock")
    started_at: datetime | None = _utc_column(default=None, description="station clock")
    finished_at: datetime | None = _utc_column(default=None, description="station clock")
    alert_id: str | None = Field(default=None, max_length=64, index=True)
    received_at: datetime = _utc_column(default_factory=utcnow, index=True)


class StationEventPublic(SQLModel):
    id: int
    station_id: str
    kind: str
    item_id: str | None
    plan_seq: int | None
    reason: str | None
    detail: str | None
    at: datetime
    received_at: datetime
