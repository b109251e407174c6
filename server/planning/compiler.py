"""Turn a station's scheduled broadcasts into its signed-plan message.

Pure: no database, no web framework, no MQTT and no hidden clock. The caller
gathers the station's entries, passes ``now`` and the next sequence number, and
gets back a ``loaxa_protocol.Plan`` ready to be sealed. The same inputs always
give the same plan, which is what makes the planner testable to the millisecond.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from loaxa_protocol import AudioRef, Plan, PlanItem, Priority

SENDER = "server"


def item_id_for(broadcast_id: int) -> str:
    """The stable plan item id of a broadcast; stations echo it in their events."""
    return f"b-{broadcast_id}"


def broadcast_id_of(item_id: str) -> int | None:
    """The broadcast an item id names, or None if it names something else."""
    prefix, _, number = item_id.partition("-")
    if prefix != "b" or not number.isdigit():
        return None
    return int(number)


@dataclass(frozen=True)
class PlanEntry:
    """One broadcast as the planner needs it; ``audio_url`` is already signed."""

    broadcast_id: int
    title: str
    start_at: datetime
    priority: Priority
    sha256: str
    size_bytes: int
    duration_ms: int
    codec: str
    audio_url: str

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(milliseconds=self.duration_ms)


def compile_plan(
    station_id: str,
    entries: Iterable[PlanEntry],
    now: datetime,
    horizon: timedelta,
    seq: int,
    ttl: timedelta,
) -> Plan:
    """The station's complete programme from ``now`` to ``now + horizon``.

    An item is kept while its audio has not ended, so a bulletin already playing
    stays in the plan (a new plan must not cut it off), and is left out until it
    starts before the horizon. Items are ordered by start, then highest priority,
    then id, so equal inputs produce byte-identical plans.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    until = now + horizon
    kept = sorted(
        (e for e in entries if e.end_at > now and e.start_at < until),
        key=lambda e: (e.start_at, -e.priority.rank, e.broadcast_id),
    )
    items = [
        PlanItem(
            item_id=item_id_for(e.broadcast_id),
            title=e.title,
            start_at=e.start_at,
            priority=e.priority,
            audio=AudioRef(
                sha256=e.sha256,
                size_bytes=e.size_bytes,
                duration_ms=e.duration_ms,
                url=e.audio_url,
                codec=e.codec,
            ),
        )
        for e in kept
    ]
    return Plan(
        sender=SENDER,
        seq=seq,
        issued_at=now,
        expires_at=now + ttl,
        to=station_id,
        station_id=station_id,
        horizon_until=until,
        items=items,
    )
