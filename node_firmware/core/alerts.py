"""Emergency alerts on the station: what is remembered, and what one plays.

Pure data for :class:`node_firmware.core.machine.NodeCore`, which owns the
transitions. Two things live here:

- :class:`AlertMemory`, the alert replay rule. Alerts are not sequence-checked (a
  province re-sends the *same* signed alert to a station that reconnects); instead
  every alert id seen or cancelled is remembered until its expiry. A copy of an alert
  already heard is only re-acknowledged; a cancel remembered before its alert arrives
  keeps the late alert silent. The memory is small (ids and instants), pruned at
  expiry and capped, and is persisted with the rest of the core's memory.
- :class:`AlertRun`, one alert being played: the list of *parts* (tone, message,
  tone, message, … ``repeat`` times) and where the player is in it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, NamedTuple

from pydantic import Field, TypeAdapter, ValidationError

from loaxa_protocol import Alert, AlertCancel, InlineAudio, RejectReason

MEMORY_MAX = 512
"""Alert ids remembered at most; far above what a province sends within 48 h."""

_ALERTISH: TypeAdapter[Alert | AlertCancel] = TypeAdapter(
    Annotated[Alert | AlertCancel, Field(discriminator="type")]
)

_SIGNATURE_CHECKED = frozenset(
    {
        RejectReason.WRONG_PURPOSE,
        RejectReason.RETIRED_KEY,
        RejectReason.EXPIRED,
        RejectReason.FROM_FUTURE,
        RejectReason.WRONG_STATION,
    }
)


class Remembered(NamedTuple):
    expires_at: datetime
    drill: bool | None
    """None when only a cancel has been seen (a cancel does not say)."""
    cancelled: bool


@dataclass
class AlertMemory:
    """Alert ids seen or cancelled, each until its expiry (the alert replay rule)."""

    entries: dict[str, Remembered] = field(default_factory=dict)

    def get(self, alert_id: str, now: datetime) -> Remembered | None:
        entry = self.entries.get(alert_id)
        return entry if entry is not None and now < entry.expires_at else None

    def remember(self, alert_id: str, entry: Remembered, now: datetime) -> None:
        """Record ``entry``; forget what has expired, and the soonest-expiring past the cap."""
        self.entries[alert_id] = entry
        if len(self.entries) > MEMORY_MAX // 2:
            self.entries = {k: v for k, v in self.entries.items() if v.expires_at > now}
        if len(self.entries) > MEMORY_MAX:
            keep = sorted(self.entries.items(), key=lambda kv: kv[1].expires_at)[-MEMORY_MAX:]
            self.entries = dict(keep)

    def to_json(self) -> dict[str, list[object]]:
        return {
            k: [v.expires_at.isoformat(), v.drill, v.cancelled] for k, v in self.entries.items()
        }

    @classmethod
    def from_json(cls, data: dict[str, list[object]], now: datetime) -> AlertMemory:
        entries: dict[str, Remembered] = {}
        for alert_id, (expires, drill, cancelled) in data.items():
            at = datetime.fromisoformat(str(expires))
            if at > now:
                drill_flag = None if drill is None else bool(drill)
                entries[alert_id] = Remembered(at, drill_flag, bool(cancelled))
        return cls(entries)


class Part(NamedTuple):
    """One file the player plays as part of an alert."""

    sha256: str
    duration_ms: int
    opens_repetition: bool
    """a repetition starts here, so ``gap_ms`` of silence comes first (except the first)"""
    is_message: bool
    """the message, which closes a repetition (the other kind of part is the tone)"""


@dataclass
class AlertRun:
    """An accepted alert being played (or waiting between repetitions)."""

    alert: Alert
    parts: list[Part]
    index: int = 0
    """the part cued or playing now"""
    cue_at: datetime | None = None
    """when part ``index`` starts; None once it is handed to the player"""
    started_at: datetime | None = None
    """when the first part actually sounded"""
    tone_skipped: bool = False
    hang_at: datetime | None = None
    """the part handed to the player must have ended by then (its length + a margin)"""

    @property
    def item_id(self) -> str:
        return f"alert:{self.alert.alert_id}"

    @property
    def part_id(self) -> str:
        return f"alert:{self.alert.alert_id}#{self.index}"

    @property
    def part(self) -> Part:
        return self.parts[self.index]

    @property
    def repetitions_done(self) -> int:
        return sum(1 for p in self.parts[: self.index] if p.is_message)

    def next_start(self, finished_at: datetime) -> datetime | None:
        """Advance to the next part; its start instant, or None when the alert is done."""
        self.index += 1
        if self.index >= len(self.parts):
            return None
        gap = timedelta(milliseconds=self.alert.gap_ms) if self.part.opens_repetition else None
        return finished_at + gap if gap else finished_at


def parts_of(alert: Alert, tone_cached: bool) -> list[Part]:
    """Tone (when it is given and cached) then message, ``repeat`` times."""
    message = alert.audio if alert.audio is not None else alert.inline
    assert message is not None  # the model guarantees exactly one
    use_tone = alert.tone is not None and tone_cached
    parts: list[Part] = []
    for _ in range(alert.repeat):
        if use_tone:
            assert alert.tone is not None
            parts.append(Part(alert.tone.sha256, alert.tone.duration_ms, True, False))
        parts.append(Part(message.sha256, message.duration_ms, not use_tone, True))
    return parts


def decode_inline(inline: InlineAudio) -> bytes | str:
    """The inline file's bytes, or why they cannot be trusted (not base64, wrong hash)."""
    try:
        data = binascii.a2b_base64(inline.data, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        return f"inline audio is not base64: {exc}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != inline.sha256:
        return f"inline audio hashes to {digest}, the alert says {inline.sha256}"
    return data


def refused_alert(raw: bytes, reason: RejectReason) -> tuple[str, bool | None] | None:
    """``(alert_id, drill)`` of a refused alert or cancel, for the ``rejected`` event.

    Only when the signature was good (a refusal from the purpose check on): the fields
    of an unsigned or forged message are never repeated, so a forgery cannot mark a
    station as having refused a real alert. Runs on the refusal path only.
    """
    if reason not in _SIGNATURE_CHECKED:
        return None
    try:
        payload_b64 = json.loads(raw)["payload"]
        payload = base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
        message = _ALERTISH.validate_json(payload)
    except (ValueError, KeyError, TypeError, binascii.Error, ValidationError):
        return None
    return message.alert_id, message.drill if isinstance(message, Alert) else None
