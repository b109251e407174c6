"""Message models for every payload on the wire.

Down-messages (``Plan``, ``Command``) are signed and wrapped in an envelope (see
``envelope.py``); up-messages (``Event``, ``Health``, ``Status``) are plain JSON.
All times are timezone-aware and normalised to UTC; a naive time is a validation
error, never silently "local".
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="lower-case hex sha256")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Priority(enum.StrEnum):
    """Circular 39/2020/TT-BTTTT classes plus live and relay, highest first."""

    EMERGENCY = "emergency"
    LIVE = "live"
    PRIORITY = "priority"
    NORMAL = "normal"
    BACKGROUND = "background"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {
    Priority.EMERGENCY: 4,
    Priority.LIVE: 3,
    Priority.PRIORITY: 2,
    Priority.NORMAL: 1,
    Priority.BACKGROUND: 0,
}


class AudioRef(Strict):
    """A content-addressed audio file and where to fetch it."""

    sha256: Sha256Hex
    size_bytes: int = Field(gt=0, description="exact size of the encoded file")
    duration_ms: int = Field(gt=0, description="playing time of the file")
    url: str = Field(description="expiring signed URL; supports HTTP Range")
    codec: str = Field(default="opus", description="delivery codec, see docs/audio.md")


class PlanItem(Strict):
    item_id: str = Field(min_length=1, max_length=64, description="stable id, e.g. b-42")
    title: str = Field(default="", max_length=200)
    start_at: UtcDatetime = Field(description="absolute start instant, UTC")
    priority: Priority = Priority.NORMAL
    audio: AudioRef

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(milliseconds=self.audio.duration_ms)


class SignedHeader(Strict):
    """Fields every signed message carries inside the signed bytes."""

    v: Literal[1] = 1
    sender: str = Field(min_length=1, max_length=64, description="whose sequence this is")
    seq: int = Field(ge=0, description="per-sender, strictly increasing")
    issued_at: UtcDatetime
    expires_at: UtcDatetime
    to: str = Field(min_length=1, description="station id, or 'area:<code>'")


class Plan(SignedHeader):
    """A station's complete programme for the horizon; replaces any earlier plan."""

    type: Literal["plan"] = "plan"
    station_id: str
    horizon_until: UtcDatetime
    items: list[PlanItem] = Field(default_factory=list, max_length=2000)


class Command(SignedHeader):
    """A one-shot instruction to a station (test tone, restart…)."""

    type: Literal["command"] = "command"
    name: str = Field(min_length=1, max_length=40)
    args: dict[str, Any] = Field(default_factory=dict)


class KeyEntry(Strict):
    """One public key a station should trust, and until when."""

    kid: str = Field(min_length=1, max_length=64)
    public_key: str = Field(description="raw Ed25519 public key, base64url without padding")
    purposes: list[str] = Field(min_length=1, description="message types it may sign")
    valid_until: UtcDatetime | None = Field(
        default=None, description="after this instant its signatures are refused"
    )


class TrustUpdate(SignedHeader):
    """The complete set of keys a station trusts from now on (key rotation).

    A complete set, not a diff, so the retained copy is all a station needs, however
    many updates it missed. Signed by a key the station trusts *now*.
    """

    type: Literal["trust"] = "trust"
    keys: list[KeyEntry] = Field(min_length=1, max_length=16)


SignedMessage = Annotated[Plan | Command | TrustUpdate, Field(discriminator="type")]


class EventKind(enum.StrEnum):
    PLAN_ACCEPTED = "plan_accepted"
    AUDIO_FETCHED = "audio_fetched"
    AUDIO_FAILED = "audio_failed"
    PLAYING = "playing"
    PLAYED = "played"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    REJECTED = "rejected"
    TRUST_UPDATED = "trust_updated"
    AMP_FAULT = "amp_fault"
    RELAY_FAULT = "relay_fault"


class Event(Strict):
    """Something a station did or refused. ``at`` is the station's own clock."""

    type: Literal["event"] = "event"
    station_id: str
    kind: EventKind
    at: UtcDatetime
    item_id: str | None = None
    plan_seq: int | None = None
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    reason: str | None = Field(default=None, description="machine-readable reason code")
    detail: str | None = Field(default=None, max_length=500)


class StatusState(enum.StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    STOPPED = "stopped"


class Status(Strict):
    type: Literal["status"] = "status"
    station_id: str
    state: StatusState
    at: UtcDatetime | None = Field(default=None, description="absent in the last will")


class Health(Strict):
    """A heartbeat: every ``heartbeat_s`` and at once on a change of state.

    Every probe is optional: a station reports what its hardware can measure.
    """

    type: Literal["health"] = "health"
    station_id: str
    at: UtcDatetime
    agent_version: str
    uptime_s: float = Field(ge=0)
    disk_free_bytes: int | None = None
    disk_total_bytes: int | None = None
    cpu_temp_c: float | None = None
    load_1m: float | None = None
    mem_used_pct: float | None = None
    ntp_synced: bool | None = Field(default=None, description="system clock NTP-synchronised")
    modem_rssi_dbm: int | None = Field(default=None, description="from AT+CSQ")
    modem_operator: str | None = Field(default=None, description="from AT+COPS?")
    amp_on: bool
    amp_current_ma: float | None = Field(default=None, description="from a reporting board")
    amp_temp_c: float | None = None
    amp_fault: str | None = Field(default=None, description="e.g. no_current_while_playing")
    relay_ok: bool
    volume_pct: int | None = None
    plan_seq: int | None = None
    plan_items: int = 0
    cached_audio: int = 0
    playing_item: str | None = None


class CommandReply(Strict):
    """A station's answer to a :class:`Command`, on its ``reply`` topic."""

    type: Literal["reply"] = "reply"
    station_id: str
    command_seq: int = Field(description="the seq of the command answered")
    name: str
    at: UtcDatetime
    ok: bool
    detail: str | None = Field(default=None, max_length=500)
    data: dict[str, Any] = Field(default_factory=dict, description="result, at most 64 KiB")
