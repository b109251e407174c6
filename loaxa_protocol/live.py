"""Live audio frames: one Opus packet each, authenticated for one station and session.

A frame is binary (JSON and base64 would cost a third of the 32 kbit/s budget)::

    offset  size  field
    0       1     version (1)
    1       8     session id (the 16 hex digits of ``LiveStart.session_id``, as bytes)
    9       4     sequence, big-endian, from 0, +1 per frame
    13      8     capture time, ms since the Unix epoch (the sender's clock; for
                  latency measurement only: playout never trusts it)
    21      2     frame duration, in 48 kHz samples (960 = 20 ms … 2880 = 60 ms)
    23      n     one Opus packet
    23+n    16    HMAC-SHA256 tag over everything before it, truncated to 128 bits,
                  with the station's ``frame_key`` from the signed ``LiveStart``

The tag binds session, sequence and audio, so a frame cannot be forged without the
key, moved to another session or station, or altered; a replay (a copy of a real
frame) is caught by the sequence window (:class:`SeqWindow`). The first byte of a
signed envelope is ``{``, so a station tells a control message from a frame by it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

FRAME_VERSION = 1
_HEADER = struct.Struct(">B8sIQH")
TAG_BYTES = 16
MAX_OPUS_BYTES = 1275
"""The largest Opus packet (RFC 6716, 3.4)."""
OVERHEAD_BYTES = _HEADER.size + TAG_BYTES
ALLOWED_SAMPLES = frozenset({120, 240, 480, 960, 1920, 2880})
"""Opus frame sizes at 48 kHz: 2.5, 5, 10, 20, 40 and 60 ms."""


def new_key(secret: bytes, session_id: str, station_id: str) -> bytes:
    """The frame key of one station for one session, derived from the session's secret."""
    return hmac.new(secret, f"loaxa-live/{session_id}/{station_id}".encode(), "sha256").digest()


def key_text(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def key_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Frame:
    session_id: str
    seq: int
    capture_ms: int
    samples: int
    opus: bytes

    @property
    def duration_ms(self) -> float:
        return self.samples / 48


def pack(frame: Frame, key: bytes) -> bytes:
    """The wire bytes of ``frame``, tagged with ``key``."""
    head = _HEADER.pack(
        FRAME_VERSION,
        bytes.fromhex(frame.session_id),
        frame.seq,
        frame.capture_ms,
        frame.samples,
    )
    body = head + frame.opus
    return body + hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES]


class FrameError(ValueError):
    """A frame that cannot be read, or whose tag does not match (``reason``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def session_of(raw: bytes) -> str:
    """The session id a frame claims, before its tag is checked (to find the key)."""
    if len(raw) < OVERHEAD_BYTES + 1 or raw[0] != FRAME_VERSION:
        raise FrameError("malformed", f"not a version-{FRAME_VERSION} live frame")
    return raw[1:9].hex()


def unpack(raw: bytes, key: bytes) -> Frame:
    """The frame, once its tag is checked; raises :class:`FrameError` otherwise."""
    session_id = session_of(raw)
    if len(raw) > OVERHEAD_BYTES + MAX_OPUS_BYTES:
        raise FrameError("malformed", f"frame of {len(raw)} bytes exceeds the limit")
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest()[:TAG_BYTES], tag):
        raise FrameError("bad_tag", f"frame tag does not match session {session_id}")
    _v, _sid, seq, capture_ms, samples = _HEADER.unpack_from(body)
    if samples not in ALLOWED_SAMPLES:
        raise FrameError("malformed", f"frame of {samples} samples is not an Opus frame size")
    return Frame(session_id, seq, capture_ms, samples, body[_HEADER.size :])


@dataclass
class SeqWindow:
    """Anti-replay window (as IPsec's): each sequence is accepted at most once.

    Frames may arrive out of order (QoS 0 never duplicates, so a second copy is a
    replay); a sequence older than ``size`` behind the newest is refused too.
    """

    size: int = 256
    highest: int = -1
    _seen: set[int] = field(default_factory=set)

    def accept(self, seq: int) -> bool:
        """True, and remember it, when ``seq`` is new and inside the window."""
        if seq <= self.highest - self.size or seq in self._seen:
            return False
        self._seen.add(seq)
        if seq > self.highest:
            self.highest = seq
            floor = seq - self.size
            self._seen = (
                {s for s in self._seen if s > floor}
                if len(self._seen) > 2 * self.size
                else self._seen
            )
        return True
