"""Two things at the same priority on the same loudspeaker at once: refused at save.

Pure. An :class:`Occupant` is a programme (or a one-off broadcast) with the stations it
reaches and the spans it occupies (an occurrence from its first segment's start to its
last one's end; silence occupies time too). A higher priority simply pre-empts a lower
one on the station, so only equal priorities clash. :func:`find_clash` compares the
occupant being saved with every other one that shares a station and a priority, and
with itself (a rule firing again before the previous occurrence has finished).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from loaxa_protocol import Priority
from server.programmes.recurrence import fmt_local, to_local


@dataclass(frozen=True)
class Part:
    """A named stretch inside a span: ``offset_ms`` from the span's start."""

    offset_ms: int
    length_ms: int
    label: str


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Occupant:
    key: str
    """e.g. ``programme 12`` or ``broadcast 40``: unique among occupants"""
    name: str
    priority: Priority
    stations: frozenset[str]
    spans: tuple[Span, ...]
    """sorted by start"""
    parts: tuple[Part, ...] = ()

    def label_at(self, span: Span, instant: datetime) -> str:
        """``'Buổi sáng' item 2 'Tin huyện' (05:15–05:45)``: what occupies ``instant``."""
        offset = int((instant - span.start) / timedelta(milliseconds=1))
        for part in self.parts:
            if part.offset_ms <= offset < part.offset_ms + part.length_ms:
                start = span.start + timedelta(milliseconds=part.offset_ms)
                end = start + timedelta(milliseconds=part.length_ms)
                return f"{self.name!r} {part.label} ({_hm(start)}–{_hm(end)})"
        return f"{self.name!r} ({_hm(span.start)}–{_hm(span.end)})"


@dataclass(frozen=True)
class Clash:
    station_id: str
    at: datetime
    first: str
    second: str
    priority: Priority
    more: int = 0

    @property
    def message(self) -> str:
        extra = (
            f" (and {self.more} more clash{'es' if self.more != 1 else ''})" if self.more else ""
        )
        return (
            f"overlap at {self.priority.value} priority on station {self.station_id} at "
            f"{fmt_local(self.at)} (local): {self.first} overlaps {self.second}; move one of "
            f"them or give one a different priority{extra}"
        )


def _hm(instant: datetime) -> str:
    return to_local(instant).strftime("%H:%M:%S").removesuffix(":00")


def _overlaps(a: Sequence[Span], b: Sequence[Span], same: bool) -> list[tuple[Span, Span]]:
    """Overlapping pairs between two start-sorted span lists (or within one when ``same``)."""
    found: list[tuple[Span, Span]] = []
    if same:
        for earlier, later in itertools.pairwise(a):
            if later.start < earlier.end:
                found.append((earlier, later))
        return found
    j = 0
    for span in a:
        while j < len(b) and b[j].end <= span.start:
            j += 1
        k = j
        while k < len(b) and b[k].start < span.end:
            if b[k].end > span.start:
                found.append((span, b[k]))
            k += 1
    return found


def find_clash(new: Occupant, others: Iterable[Occupant]) -> Clash | None:
    """The earliest clash of ``new`` with itself or another occupant, or None."""
    clashes: list[tuple[datetime, str, Occupant, Span, Occupant, Span]] = []
    candidates = [(new, True)] + [
        (other, False)
        for other in others
        if other.key != new.key and other.priority == new.priority and other.stations & new.stations
    ]
    for other, same in candidates:
        shared = sorted(new.stations & other.stations)
        if not shared:
            continue
        for mine, theirs in _overlaps(new.spans, other.spans, same):
            at = max(mine.start, theirs.start)
            clashes.append((at, shared[0], new, mine, other, theirs))
    if not clashes:
        return None
    clashes.sort(key=lambda c: (c[0], c[1], c[4].key))
    at, station, first, mine, second, theirs = clashes[0]
    return Clash(
        station_id=station,
        at=at,
        first=first.label_at(mine, at),
        second=second.label_at(theirs, at),
        priority=new.priority,
        more=len(clashes) - 1,
    )
