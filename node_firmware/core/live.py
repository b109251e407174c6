"""Live sessions on the station: who may speak, which frames are genuine, when to play.

Two pure parts, no clock and no I/O:

- :class:`LiveRun` — one session's state as the core keeps it: its per-station frame
  key (from the signed ``LiveStart``), the anti-replay window, when the last genuine
  frame came, whether it sounds now, and counts for the as-run record.
  :func:`check_frame` is the one door for frames: a frame is played only when its tag
  matches the session's key and its sequence is new.
- :class:`JitterBuffer` — the playout decision the live output asks once per frame
  period: play this frame, conceal a lost one (Opus packet-loss concealment), or wait.
  It adapts: an underrun raises the target depth one frame (up to ``max_ms``); each
  ``RELAX_AFTER_S`` without one lowers it a frame (down to ``min_ms``); a depth that
  stayed above target for ``SHRINK_AFTER_S`` drops one frame to win back latency.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Generic, TypeVar

from loaxa_protocol import LiveStart
from loaxa_protocol.live import Frame, FrameError, SeqWindow, key_bytes, session_of, unpack

SILENCE_AFTER = timedelta(seconds=3)
"""No genuine frame for this long: the station goes silent, the amplifier off."""
REFUSAL_REPORT_EVERY = timedelta(seconds=10)
"""Refused frames of one session and reason are reported at most this often (a flood of
forged frames must not flood the outbox); each report counts the refusals since."""
REMEMBERED_SESSIONS = 4


@dataclass
class LiveRun:
    """One live session on this station."""

    start: LiveStart
    key: bytes
    last_frame_at: datetime
    """when the last genuine frame arrived (the start, before the first)"""
    window: SeqWindow = field(default_factory=SeqWindow)
    sounding_since: datetime | None = None
    """when the live output opened (None: silent — not begun, quiet or pre-empted)"""
    played: int = 0
    """genuine frames handed to the output while sounding"""
    dropped: int = 0
    """genuine frames that came while the session could not sound (an alert played)"""
    rounds: int = 0
    """how many times it began to sound (more than one after a pause or an alert)"""

    @classmethod
    def of(cls, start: LiveStart, now: datetime) -> LiveRun:
        return cls(start, key_bytes(start.frame_key), now)

    @property
    def session_id(self) -> str:
        return self.start.session_id

    @property
    def item_id(self) -> str:
        return item_id_of(self.session_id)


def item_id_of(session_id: str) -> str:
    """The as-run item id of a live session (``live-<session>``)."""
    return f"live-{session_id}"


class Refusal(StrEnum):
    MALFORMED = "live_malformed"
    BAD_TAG = "live_bad_tag"
    REPLAYED = "live_replayed"
    UNKNOWN_SESSION = "live_unknown_session"


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    detail: str
    session_id: str | None


@dataclass(frozen=True)
class Late:
    """A genuine frame of a session already over here: dropped without a word."""


def check_frame(
    raw: bytes, current: LiveRun | None, ended: OrderedDict[str, LiveRun]
) -> Frame | Refused | Late:
    """The genuine, new frame ``raw`` of the current session, or why it is not one."""
    try:
        session_id = session_of(raw)
    except FrameError as exc:
        return Refused(Refusal.MALFORMED, str(exc), None)
    run = current if current is not None and current.session_id == session_id else None
    run = run or ended.get(session_id)
    if run is None:
        return Refused(Refusal.UNKNOWN_SESSION, f"no live session {session_id} here", session_id)
    try:
        frame = unpack(raw, run.key)
    except FrameError as exc:
        reason = Refusal.BAD_TAG if exc.reason == "bad_tag" else Refusal.MALFORMED
        return Refused(reason, str(exc), session_id)
    if not run.window.accept(frame.seq):
        detail = f"frame {frame.seq} of session {session_id} was already played or is too old"
        return Refused(Refusal.REPLAYED, detail, session_id)
    return Late() if run is not current else frame


@dataclass
class RefusalCounter:
    """Rate-limits refusal reports per (session, reason), counting what it held back."""

    _next: dict[tuple[str | None, str], datetime] = field(default_factory=dict)
    _held: dict[tuple[str | None, str], int] = field(default_factory=dict)

    def report(self, refused: Refused, now: datetime) -> int | None:
        """How many refusals to report now (this one included), or None to hold it."""
        key = (refused.session_id, refused.reason.value)
        self._held[key] = self._held.get(key, 0) + 1
        if now < self._next.get(key, now):
            return None
        self._next[key] = now + REFUSAL_REPORT_EVERY
        if len(self._next) > 64:  # keep only the freshest keys
            for old in sorted(self._next, key=self._next.__getitem__)[:32]:
                self._next.pop(old, None)
                self._held.pop(old, None)
        return self._held.pop(key)


# ---------------------------------------------------------------- playout

T = TypeVar("T")

SHRINK_AFTER_S = 5.0
RELAX_AFTER_S = 10.0
"""No underrun for this long: the target depth comes down one frame (to ``min_ms``)."""
REBUFFER_AFTER = 5
"""Concealed periods in a row with nothing buffered: stop concealing and buffer again."""


class Playout(StrEnum):
    PLAY = "play"
    CONCEAL = "conceal"
    """a frame is missing here: packet-loss concealment (counts as a gap)"""
    WAIT = "wait"
    """buffering (before the start or after a long underrun): silence, not a gap"""


@dataclass
class JitterBuffer(Generic[T]):
    """Frames in, one decision per frame period out; the caller's clock (seconds)."""

    frame_ms: float = 60.0
    target_ms: float = 180.0
    min_ms: float = 120.0
    max_ms: float = 1000.0
    _frames: dict[int, T] = field(default_factory=dict)
    _next: int | None = None
    _playing: bool = False
    _empty_runs: int = 0
    _above_since: float | None = None
    _calm_since: float | None = None
    concealed: int = 0
    late: int = 0
    rebuffered: int = 0
    shrunk: int = 0

    def depth_ms(self) -> float:
        return len(self._frames) * self.frame_ms

    def push(self, seq: int, frame: T) -> None:
        if self._next is not None and seq < self._next:
            self.late += 1  # its turn has passed: concealed already
            return
        self._frames[seq] = frame
        if not self._playing:  # keep only the newest target's worth while buffering
            excess = len(self._frames) - max(1, round(self.target_ms / self.frame_ms))
            for old in sorted(self._frames)[: max(0, excess)]:
                del self._frames[old]

    def pop(self, now_s: float) -> tuple[Playout, T | None]:
        if not self._playing:
            if not self._frames or self.depth_ms() < self.target_ms:
                return Playout.WAIT, None
            self._playing, self._next, self._above_since = True, min(self._frames), None
        assert self._next is not None
        seq = self._next
        self._next += 1
        frame = self._frames.pop(seq, None)
        if frame is not None:
            self._empty_runs = 0
            self._relax(now_s)
            self._adapt_down(now_s)
            return Playout.PLAY, frame
        self.concealed += 1
        if not self._frames:
            self._calm_since = now_s
            self._empty_runs += 1
            self.target_ms = min(self.max_ms, self.target_ms + self.frame_ms)
            if self._empty_runs >= REBUFFER_AFTER:
                self._playing, self._empty_runs = False, 0
                self.rebuffered += 1
                return Playout.WAIT, None
        return Playout.CONCEAL, None

    def _relax(self, now_s: float) -> None:
        """A burst of congestion raised the target; calm since then lowers it again."""
        if self._calm_since is None:
            self._calm_since = now_s
        elif now_s - self._calm_since >= RELAX_AFTER_S and self.target_ms > self.min_ms:
            self.target_ms = max(self.min_ms, self.target_ms - self.frame_ms)
            self._calm_since = now_s

    def _adapt_down(self, now_s: float) -> None:
        """Depth well above target for a while: skip one frame, win back its latency."""
        if self.depth_ms() <= self.target_ms + 2 * self.frame_ms:
            self._above_since = None
            return
        if self._above_since is None:
            self._above_since = now_s
        elif now_s - self._above_since >= SHRINK_AFTER_S:
            assert self._next is not None
            self._frames.pop(self._next, None)
            self._next += 1
            self.shrunk += 1
            self._above_since = None
