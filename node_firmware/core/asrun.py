"""What this station did with each plan item, remembered across a reboot.

Pure data for :class:`node_firmware.core.machine.NodeCore`. Without it a station that
boots can only guess about the items of its stored plan that lie in the past; it used
to mark them done and say nothing, so a bulletin missed during a power cut looked to
the server like a bulletin never reported. With it, the boot tells the truth:

==========================  ===========================================================
the memory says             reported at boot
==========================  ===========================================================
an outcome                  nothing (the event itself waits in the outbox if unsent)
started, no outcome         ``interrupted`` (``restart``): the reboot cut it
nothing, item in the past   ``failed`` (``station_down``): the station was not running
==========================  ===========================================================

A station upgraded from a version without this memory reports nothing for past
items (it cannot tell played from missed); ``known`` says which case it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from loaxa_protocol import EventKind, PlanItem

FINAL = frozenset({EventKind.PLAYED, EventKind.INTERRUPTED, EventKind.FAILED})


@dataclass(frozen=True)
class BootVerdict:
    """The last word on an item that the station's reboot decided."""

    outcome: EventKind
    report: bool
    reason: str | None = None
    detail: str | None = None
    started_at: datetime | None = None


@dataclass
class AsRunMemory:
    started: dict[str, datetime] = field(default_factory=dict)
    ended: dict[str, EventKind] = field(default_factory=dict)
    known: bool = True

    def note(self, item_id: str, kind: EventKind, started_at: datetime | None) -> bool:
        """Record an item event; True when the memory changed (it must be saved)."""
        if kind is EventKind.PLAYING and started_at is not None:
            self.started[item_id] = started_at
            return True
        if kind in FINAL and self.ended.get(item_id) is not kind:
            self.ended[item_id] = kind
            return True
        return False

    def keep_only(self, item_ids: set[str]) -> None:
        """Forget items the plan no longer has (the memory stays the plan's size)."""
        self.started = {k: v for k, v in self.started.items() if k in item_ids}
        self.ended = {k: v for k, v in self.ended.items() if k in item_ids}

    def after_boot(self, item: PlanItem, now: datetime) -> BootVerdict | None:
        """What the boot concludes about ``item``; None when it still has to play."""
        outcome = self.ended.get(item.item_id)
        if outcome is not None:
            return BootVerdict(outcome, report=False)
        started = self.started.get(item.item_id)
        if started is not None:
            detail = "the station restarted while it played"
            return BootVerdict(EventKind.INTERRUPTED, True, "restart", detail, started)
        if item.end_at > now:
            return None
        if not self.known:
            return BootVerdict(EventKind.PLAYED, report=False)
        detail = "the station was not running at its time"
        return BootVerdict(EventKind.FAILED, True, "station_down", detail)

    def to_json(self) -> dict[str, object]:
        return {
            "started": {k: v.isoformat() for k, v in self.started.items()},
            "ended": {k: v.value for k, v in self.ended.items()},
        }

    @classmethod
    def from_json(cls, doc: object) -> AsRunMemory:
        """The memory from a saved state; ``known=False`` when it has none (an upgrade)."""
        if not isinstance(doc, dict):
            return cls(known=False)
        try:
            started = {str(k): datetime.fromisoformat(v) for k, v in doc["started"].items()}
            ended = {str(k): EventKind(v) for k, v in doc["ended"].items()}
        except (KeyError, AttributeError, TypeError, ValueError):
            return cls(known=False)
        return cls(started, ended)
