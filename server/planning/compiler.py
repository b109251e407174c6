"""Turn a station's broadcasts and programme occurrences into its signed-plan message.

Pure: no database, no web framework, no MQTT and no hidden clock. The caller
gathers the station's entries, passes ``now`` and the next sequence number, and
gets back a ``loaxa_protocol.Plan`` ready to be sealed. The same inputs always
give the same plan, which is what makes the planner testable to the millisecond.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from loaxa_protocol import AudioRef, Plan, PlanItem, Priority, StreamRef

SENDER = "server"
MAX_PLAN_ITEMS = 2000
"""The protocol's cap on ``Plan.items`` (``loaxa_protocol.messages.Plan``)."""


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
    """One thing to play as the planner needs it; ``audio_url`` is already signed.

    A one-off broadcast sets ``broadcast_id``; a programme occurrence sets ``item_id``
    (see ``server.programmes.timeline``). A stream entry sets ``stream_url`` and
    ``window_ms``, and its audio fields (when ``sha256`` is set) describe the fallback.
    """

    broadcast_id: int | None
    title: str
    start_at: datetime
    priority: Priority
    sha256: str = ""
    size_bytes: int = 0
    duration_ms: int = 0
    codec: str = "opus"
    audio_url: str = ""
    item_id: str | None = None
    stream_url: str | None = None
    window_ms: int | None = None
    volume_pct: int | None = None

    @property
    def id(self) -> str:
        if self.item_id is not None:
            return self.item_id
        assert self.broadcast_id is not None, "a plan entry needs broadcast_id or item_id"
        return item_id_for(self.broadcast_id)

    @property
    def length_ms(self) -> int:
        if self.stream_url is not None:
            assert self.window_ms is not None, "a stream entry needs window_ms"
            return self.window_ms
        return self.duration_ms

    @property
    def end_at(self) -> datetime:
        return self.start_at + timedelta(milliseconds=self.length_ms)

    @property
    def sort_key(self) -> tuple[datetime, int, int, int, str]:
        """Start, highest priority, broadcasts before programmes (by number), then id."""
        is_programme = 0 if self.broadcast_id is not None else 1
        return (self.start_at, -self.priority.rank, is_programme, self.broadcast_id or 0, self.id)

    def audio_ref(self) -> AudioRef | None:
        if not self.sha256:
            return None
        return AudioRef(
            sha256=self.sha256,
            size_bytes=self.size_bytes,
            duration_ms=self.duration_ms,
            url=self.audio_url,
            codec=self.codec,
        )

    @cached_property
    def plan_item(self) -> PlanItem:
        """The wire item, built once per entry: a programme's entries are shared by every
        station it reaches, and building the message is most of a plan's cost."""
        audio = self.audio_ref()
        if self.stream_url is not None:
            return PlanItem(
                item_id=self.id,
                title=self.title,
                start_at=self.start_at,
                priority=self.priority,
                stream=StreamRef(url=self.stream_url, fallback=audio),
                window_ms=self.window_ms,
                volume_pct=self.volume_pct,
            )
        assert audio is not None, f"plan entry {self.id} has neither audio nor stream"
        return PlanItem(
            item_id=self.id,
            title=self.title,
            start_at=self.start_at,
            priority=self.priority,
            audio=audio,
            volume_pct=self.volume_pct,
        )


def compile_plan(
    station_id: str,
    entries: Iterable[PlanEntry],
    now: datetime,
    horizon: timedelta,
    seq: int,
    ttl: timedelta,
    keep: Iterable[AudioRef] = (),
    max_items: int = MAX_PLAN_ITEMS,
) -> Plan:
    """The station's complete programme from ``now`` to ``now + horizon``.

    An item is kept while its audio has not ended, so a bulletin already playing
    stays in the plan (a new plan must not cut it off), and is left out until it
    starts before the horizon. Items are ordered by start, then highest priority,
    then id, so equal inputs produce byte-identical plans. Broadcasts and programme
    occurrences are entries alike; a stream entry becomes a stream item for its window.

    More than ``max_items`` in the window: the plan ends where the first one left out
    starts (``horizon_until`` says so), so a station never holds a plan that silently
    skips an item, and the roll forward brings the rest in as the window moves.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if max_items < 1:
        raise ValueError(f"max_items must be at least 1, not {max_items}")
    until = now + horizon
    kept = sorted(
        (e for e in entries if e.end_at > now and e.start_at < until),
        key=lambda e: e.sort_key,
    )
    if len(kept) > max_items:
        # Items starting together stay together: cut before the first start left out.
        until = kept[max_items].start_at
        kept = [e for e in kept[:max_items] if e.start_at < until]
    items = [e.plan_item for e in kept]
    return Plan(
        sender=SENDER,
        seq=seq,
        issued_at=now,
        expires_at=now + ttl,
        to=station_id,
        station_id=station_id,
        horizon_until=until,
        items=items,
        keep=list(keep),
    )
