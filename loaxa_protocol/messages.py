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

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

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


class StreamRef(Strict):
    """A live channel (an HTTP/Icecast URL such as a VOV channel) relayed for a window."""

    url: str = Field(pattern=r"^https?://", max_length=500)
    fallback: AudioRef | None = Field(
        default=None, description="played (and reported) when the stream cannot be reached"
    )


class PlanItem(Strict):
    """One thing to play: a file (``audio``) or a relayed stream (``stream``) for a window."""

    item_id: str = Field(min_length=1, max_length=64, description="stable id, e.g. b-42")
    title: str = Field(default="", max_length=200)
    start_at: UtcDatetime = Field(description="absolute start instant, UTC")
    priority: Priority = Priority.NORMAL
    audio: AudioRef | None = None
    stream: StreamRef | None = None
    window_ms: int | None = Field(
        default=None, gt=0, description="how long a stream is relayed; only for streams"
    )
    volume_pct: int | None = Field(
        default=None, ge=0, le=100, description="volume for this item; None keeps the station's"
    )

    @model_validator(mode="after")
    def _one_source(self) -> PlanItem:
        if (self.audio is None) == (self.stream is None):
            raise ValueError("a plan item has exactly one of audio or stream")
        if (self.stream is None) != (self.window_ms is None):
            raise ValueError("window_ms is given for a stream item, and only for one")
        return self

    @property
    def length_ms(self) -> int:
        if self.audio is not None:
            return self.audio.duration_ms
        assert self.window_ms is not None
        return self.window_ms

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(milliseconds=self.length_ms)

    @property
    def needed_audio(self) -> list[AudioRef]:
        """Files the station must have cached before the start."""
        if self.audio is not None:
            return [self.audio]
        assert self.stream is not None
        return [self.stream.fallback] if self.stream.fallback is not None else []


class SignedHeader(Strict):
    """Fields every signed message carries inside the signed bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

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
    keep: list[AudioRef] = Field(
        default_factory=list,
        max_length=200,
        description="audio kept cached ahead of need (canned alerts, tones), never evicted",
    )


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


class AlertSeverity(enum.StrEnum):
    """CAP 1.2 severities."""

    EXTREME = "extreme"
    SEVERE = "severe"
    MODERATE = "moderate"
    MINOR = "minor"


ALERT_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
INLINE_AUDIO_MAX_BYTES = 256 * 1024


class InlineAudio(Strict):
    """A custom alert's audio carried in the message itself (design decision 2)."""

    sha256: Sha256Hex
    codec: str = "opus"
    duration_ms: int = Field(gt=0)
    data: str = Field(
        max_length=(INLINE_AUDIO_MAX_BYTES * 4) // 3 + 4,
        description="the encoded file, standard base64",
    )


class Alert(SignedHeader):
    """An emergency alert: pre-empts everything, plays tone + message ``repeat`` times.

    Signed by a key whose purposes include ``alert``. Replay protection is by
    ``alert_id`` remembered until ``expires_at``, so a re-send of the same alert to a
    station that missed it is accepted, and a copy of one already heard is only re-acked.
    """

    type: Literal["alert"] = "alert"
    alert_id: str = Field(pattern=ALERT_ID_PATTERN)
    severity: AlertSeverity = AlertSeverity.SEVERE
    title: str = Field(default="", max_length=200)
    drill: bool = Field(description="an exercise: never reported or shown as a real alert")
    tone: AudioRef | None = Field(default=None, description="attention tone, pre-distributed")
    audio: AudioRef | None = Field(default=None, description="a canned, pre-distributed message")
    inline: InlineAudio | None = Field(default=None, description="a custom message, carried here")
    repeat: int = Field(default=1, ge=1, le=10)
    gap_ms: int = Field(default=2000, ge=0, le=60_000)

    @model_validator(mode="after")
    def _one_message(self) -> Alert:
        if (self.audio is None) == (self.inline is None):
            raise ValueError("an alert carries exactly one of audio (canned) or inline")
        return self


class AlertCancel(SignedHeader):
    """All-clear: stop alert ``alert_id`` at once wherever it plays or waits."""

    type: Literal["alert_cancel"] = "alert_cancel"
    alert_id: str = Field(pattern=ALERT_ID_PATTERN)


LIVE_SESSION_PATTERN = r"^[0-9a-f]{16}$"


class LiveStart(SignedHeader):
    """A live broadcast begins for this station (docs/live.md).

    ``frame_key`` authenticates every audio frame of the session on this station: it is
    derived by the server for this station alone, so no station can forge frames for
    another. It travels only on the station's own ``live`` topic, which the broker ACL
    lets no one else read. Retained, so a station that (re)connects mid-session joins.
    """

    type: Literal["live_start"] = "live_start"
    session_id: str = Field(pattern=LIVE_SESSION_PATTERN)
    frame_key: str = Field(min_length=43, max_length=43, description="32 bytes, base64url")
    ends_by: UtcDatetime = Field(description="the session's maximum length: silence after it")
    chime: AudioRef | None = Field(
        default=None, description="attention chime played while the amplifier warms up"
    )
    title: str = Field(default="", max_length=200)


class LiveStop(SignedHeader):
    """The live session ``session_id`` is over on this station."""

    type: Literal["live_stop"] = "live_stop"
    session_id: str = Field(pattern=LIVE_SESSION_PATTERN)


SignedMessage = Annotated[
    Plan | Command | TrustUpdate | Alert | AlertCancel | LiveStart | LiveStop,
    Field(discriminator="type"),
]


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
    STREAM_UNREACHABLE = "stream_unreachable"
    ALERT_RECEIVED = "alert_received"
    ALERT_PLAYING = "alert_playing"
    ALERT_FINISHED = "alert_finished"
    ALERT_FAILED = "alert_failed"
    ALERT_CANCELLED = "alert_cancelled"
    LIBRARY_FAILED = "library_failed"
    """a file of the canned alert library (the plan's ``keep``) could not be stored"""
    AUDIO_CORRUPT = "audio_corrupt"
    """a cached file no longer matches its sha256: discarded, fetched again"""
    LIVE_STARTED = "live_started"
    """a live session sounds on this station (``item_id`` ``live-<session>``)"""
    LIVE_ENDED = "live_ended"
    """a live session stopped sounding; ``reason`` says why, ``detail`` counts frames"""
    UPDATE_DOWNLOADING = "update_downloading"
    """an update command was accepted: the release is being fetched (``version``)"""
    UPDATE_INSTALLED = "update_installed"
    """the release is verified and installed beside the running one; waiting to be idle"""
    UPDATE_SWITCHING = "update_switching"
    """idle: restarting into the new release, on trial until it reports healthy"""
    UPDATE_COMMITTED = "update_committed"
    """the new release started healthy within its deadline: it stays"""
    UPDATE_ROLLED_BACK = "update_rolled_back"
    """the new release was not healthy in time: the station went back by itself"""
    UPDATE_FAILED = "update_failed"
    """the release could not be fetched, verified or installed; the old one runs on"""


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
    alert_id: str | None = Field(default=None, description="set on every alert_* event")
    drill: bool | None = Field(default=None, description="set on every alert_* event")
    version: str | None = Field(
        default=None, max_length=64, description="the release, on every update_* event"
    )
    rollout_id: int | None = Field(default=None, description="on every update_* event")


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
    health_dropped: int | None = Field(
        default=None,
        ge=0,
        description="heartbeats the station dropped (oldest first) while the broker was away",
    )


class CommandReply(Strict):
    """A station's answer to a :class:`Command`, on its ``reply`` topic."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    type: Literal["reply"] = "reply"
    station_id: str
    command_seq: int = Field(description="the seq of the command answered")
    name: str
    at: UtcDatetime
    ok: bool
    detail: str | None = Field(default=None, max_length=500)
    data: dict[str, Any] = Field(default_factory=dict, description="result, at most 64 KiB")
