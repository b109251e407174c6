"""Inputs to and actions from the node core.

Inputs are what drivers observed; actions are what the core wants done. Both are
frozen data so a test can write down a whole conversation with the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from loaxa_protocol import AudioRef, StreamRef
from loaxa_protocol.live import Frame
from loaxa_protocol.release import ReleaseFile

# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class TrialBoot:
    """This process is a new release on trial: healthy by ``deadline_at`` or back it goes."""

    version: str
    rollout_id: int | None
    deadline_at: datetime


@dataclass(frozen=True)
class UpdateOutcome:
    """What the launcher did to an update while no agent ran (a rollback), to report."""

    version: str
    rollout_id: int | None
    reason: str
    detail: str


@dataclass(frozen=True)
class SlotStatus:
    """The release slots as the disk and the launcher left them (``drivers/slots.py``)."""

    running_version: str
    trial: TrialBoot | None = None
    outcome: UpdateOutcome | None = None


@dataclass(frozen=True)
class Boot:
    """First input after start: what the disk remembers."""

    stored_plan: bytes | None
    memory: dict[str, Any] = field(default_factory=dict)
    cached_audio: frozenset[str] = frozenset()
    slots: SlotStatus | None = None


@dataclass(frozen=True)
class PlanReceived:
    raw: bytes


@dataclass(frozen=True)
class TrustReceived:
    """A signed update of the keys this station trusts (key rotation)."""

    raw: bytes


@dataclass(frozen=True)
class CommandReceived:
    raw: bytes


@dataclass(frozen=True)
class AlertReceived:
    """A signed ``Alert`` or ``AlertCancel`` from an area or station alert topic."""

    raw: bytes


@dataclass(frozen=True)
class StreamUnreachable:
    """The player could not reach (or lost) a relayed stream and fell back; still playing."""

    item_id: str
    reason: str


@dataclass(frozen=True)
class RelayReadback:
    """What a reporting relay board measured on the amplifier."""

    on: bool
    current_ma: float | None
    temp_c: float | None = None


@dataclass(frozen=True)
class Tick:
    """A wake-up the core asked for (or a periodic poke); carries nothing."""


@dataclass(frozen=True)
class AudioFetched:
    sha256: str


@dataclass(frozen=True)
class AudioFetchFailed:
    sha256: str
    reason: str
    code: str = "fetch"
    """machine-readable, e.g. ``disk_full``, ``network``, ``hash_mismatch``"""


@dataclass(frozen=True)
class AudioVerified:
    """A cached file was re-read and hashed: ``ok``, or ``detail`` says what is wrong (the
    driver has already discarded a file that failed)."""

    sha256: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class PlaybackStarted:
    item_id: str
    started_at: datetime


@dataclass(frozen=True)
class PlaybackFinished:
    item_id: str
    finished_at: datetime


@dataclass(frozen=True)
class PlaybackFailed:
    item_id: str
    reason: str


@dataclass(frozen=True)
class RelaySwitched:
    on: bool


@dataclass(frozen=True)
class RelayFailed:
    on: bool
    reason: str


@dataclass(frozen=True)
class BrokerConnected:
    pass


@dataclass(frozen=True)
class BrokerDisconnected:
    pass


@dataclass(frozen=True)
class LiveReceived:
    """A message on the station's ``live`` topic: a signed start or stop, or a frame."""

    raw: bytes


@dataclass(frozen=True)
class ReleaseFetched:
    """Every file of the release is on disk with its manifest's sha256 and size."""

    version: str


@dataclass(frozen=True)
class ReleaseInstalled:
    """The release is installed in ``slot`` and its agent imports and says its version."""

    version: str
    slot: str


@dataclass(frozen=True)
class ReleaseFailed:
    """Fetching (``stage`` "fetch") or installing ("install") the release failed."""

    version: str
    stage: str
    reason: str


Input = (
    Boot
    | PlanReceived
    | TrustReceived
    | CommandReceived
    | AlertReceived
    | StreamUnreachable
    | RelayReadback
    | Tick
    | AudioFetched
    | AudioFetchFailed
    | AudioVerified
    | PlaybackStarted
    | PlaybackFinished
    | PlaybackFailed
    | RelaySwitched
    | RelayFailed
    | BrokerConnected
    | BrokerDisconnected
    | LiveReceived
    | ReleaseFetched
    | ReleaseInstalled
    | ReleaseFailed
)

# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    durable: bool = False
    """kept on disk until the broker acknowledges it, sent again after a reboot (events)"""


@dataclass(frozen=True)
class SaveState:
    """Persist the accepted plan bytes and the core's memory (replay guard, keys) atomically."""

    plan_raw: bytes | None
    memory: dict[str, Any]


@dataclass(frozen=True)
class FetchAudio:
    ref: AudioRef


@dataclass(frozen=True)
class VerifyAudio:
    """Re-hash a cached file off the loop; answer with ``AudioVerified`` (discard it if bad)."""

    sha256: str


@dataclass(frozen=True)
class PinAudio:
    """The complete set of hashes the plan needs; the cache must never evict them.

    ``keep`` (hash → size) is the canned alert library among them: the cache holds room
    for any of it not yet on disk, which no ordinary download may take.
    """

    sha256s: frozenset[str]
    keep: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class SetRelay:
    on: bool


@dataclass(frozen=True)
class StoreAudio:
    """Write audio carried inline (a custom alert) into the cache, before the next action."""

    sha256: str
    data: bytes


@dataclass(frozen=True)
class StartPlayback:
    """Begin at exactly ``start_at`` (the player waits for the instant itself).

    A file item names its cached ``sha256``; a stream item names ``stream`` and plays
    it for ``duration_ms`` (the window), falling back to the stream's cached fallback.
    """

    item_id: str
    sha256: str | None
    start_at: datetime
    duration_ms: int
    volume_pct: int | None = None
    stream: StreamRef | None = None
    verify: bool = False
    """hash the file before it sounds (an alert's audio not yet verified since boot);
    a mismatch fails the playback and is reported as ``AudioVerified``"""


@dataclass(frozen=True)
class StopPlayback:
    item_id: str
    reason: str


@dataclass(frozen=True)
class RestartPlayer:
    """The player missed an item's end by far: abandon what it holds, start it afresh."""

    reason: str


@dataclass(frozen=True)
class WakeAt:
    at: datetime


@dataclass(frozen=True)
class SetVolume:
    percent: int


@dataclass(frozen=True)
class ReadAmplifier:
    """Ask a reporting relay board for the amplifier's current and temperature."""


@dataclass(frozen=True)
class SendLog:
    """Reply to command ``command_seq`` with the last ``lines`` lines of the agent's log."""

    command_seq: int
    lines: int


@dataclass(frozen=True)
class Restart:
    """Restart the agent process (after the reply has been published)."""


@dataclass(frozen=True)
class ReportHealth:
    """Publish a heartbeat; the driver adds its probes to the core's snapshot."""

    snapshot: dict[str, Any]


@dataclass(frozen=True)
class StartLive:
    """Open the live output: the chime (if any) now, live audio from ``warmup_ms`` on."""

    session_id: str
    chime_sha256: str | None
    warmup_ms: int
    volume_pct: int | None = None


@dataclass(frozen=True)
class PlayLiveFrame:
    """An authenticated frame for the live output's jitter buffer."""

    session_id: str
    frame: Frame


@dataclass(frozen=True)
class StopLive:
    """Silence the live output at once."""

    session_id: str
    reason: str


@dataclass(frozen=True)
class FetchRelease:
    """Download the release's files (HTTP Range resume) and check each sha256 and size."""

    version: str
    files: tuple[ReleaseFile, ...]
    base_url: str


@dataclass(frozen=True)
class InstallRelease:
    """Install the fetched release into the slot the station is not running from."""

    version: str
    manifest: str


@dataclass(frozen=True)
class SwitchRelease:
    """Mark ``slot`` on trial, point ``current`` at it and restart through the launcher."""

    version: str
    slot: str
    rollout_id: int
    deadline_s: int


@dataclass(frozen=True)
class CommitRelease:
    """The release on trial is healthy: clear the trial mark, it stays."""

    version: str


@dataclass(frozen=True)
class RollBackRelease:
    """Point ``current`` back at the previous slot and restart through the launcher."""

    version: str
    reason: str


@dataclass(frozen=True)
class ForgetUpdateOutcome:
    """The launcher's outcome has been reported (durably): remove its note."""


Action = (
    Publish
    | SaveState
    | FetchAudio
    | VerifyAudio
    | StoreAudio
    | PinAudio
    | SetRelay
    | StartPlayback
    | StopPlayback
    | RestartPlayer
    | WakeAt
    | ReportHealth
    | SetVolume
    | ReadAmplifier
    | SendLog
    | Restart
    | StartLive
    | PlayLiveFrame
    | StopLive
    | FetchRelease
    | InstallRelease
    | SwitchRelease
    | CommitRelease
    | RollBackRelease
    | ForgetUpdateOutcome
)
