"""A programme's items laid end to end, and its occurrences turned into plan entries.

Pure. ``compose`` turns resolved items (durations known) into segments with offsets from
the occurrence's start: a playlist becomes one segment per track, ``repeat`` plays the
whole item again after ``gap``, silence only occupies time. ``expand`` places those
segments at each occurrence and gives the compiler's ``PlanEntry`` for every segment that
sounds, each with a stable item id that maps a station's event back to programme, item,
repetition and occurrence: ``p<programme>.<item>[-<track>].<rep>.<local yyyymmddHHMM>``
(``…SS`` appended when an occurrence is not on a whole minute).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from loaxa_protocol import Priority
from server.planning.compiler import PlanEntry
from server.programmes.recurrence import to_local


@dataclass(frozen=True)
class AudioInfo:
    """An uploaded asset as a plan needs it (the URL is signed at publish time)."""

    asset_id: int
    sha256: str
    size_bytes: int
    duration_ms: int
    codec: str


@dataclass(frozen=True)
class Source:
    """One playable (or silent) stretch: exactly one of audio, stream or neither (silence)."""

    length_ms: int
    audio: AudioInfo | None = None
    stream_url: str | None = None
    fallback: AudioInfo | None = None

    @property
    def kind(self) -> str:
        if self.audio is not None:
            return "audio"
        return "stream" if self.stream_url is not None else "silence"


@dataclass(frozen=True)
class ResolvedItem:
    """An item with its sources' durations known; ``index`` is 1-based."""

    index: int
    title: str
    kind: str
    tracks: tuple[Source, ...]
    volume: int | None = None
    repeat: int = 1
    gap_ms: int = 0


@dataclass(frozen=True)
class Segment:
    item: int
    track: int
    """1-based track of a playlist; 0 for single-source items"""
    rep: int
    offset_ms: int
    source: Source
    title: str
    kind: str
    volume: int | None

    @property
    def length_ms(self) -> int:
        return self.source.length_ms

    @property
    def end_ms(self) -> int:
        return self.offset_ms + self.source.length_ms


def compose(items: Iterable[ResolvedItem]) -> list[Segment]:
    """Segments in playing order with their offsets from the occurrence's start."""
    segments: list[Segment] = []
    offset = 0
    for item in items:
        for rep in range(1, item.repeat + 1):
            if rep > 1:
                offset += item.gap_ms
            for number, source in enumerate(item.tracks, start=1):
                segments.append(
                    Segment(
                        item=item.index,
                        track=number if len(item.tracks) > 1 or item.kind == "playlist" else 0,
                        rep=rep,
                        offset_ms=offset,
                        source=source,
                        title=item.title,
                        kind=item.kind,
                        volume=item.volume,
                    )
                )
                offset += source.length_ms
    return segments


def segment_label(segment: Segment) -> str:
    """``Bản tin #2 (lần 2)``: the item's title, the playlist track and the repetition."""
    label = segment.title + (f" #{segment.track}" if segment.track else "")
    return label + (f" (lần {segment.rep})" if segment.rep > 1 else "")


def total_ms(segments: Iterable[Segment]) -> int:
    return max((s.end_ms for s in segments), default=0)


def item_id(programme_id: int, segment: Segment, occurrence_utc: datetime) -> str:
    """``p12.3.1.202612070500`` (item 3, first play) or ``p12.4-2.1.…`` (playlist track 2)."""
    item = f"{segment.item}-{segment.track}" if segment.track else str(segment.item)
    return f"p{programme_id}.{item}.{segment.rep}.{occurrence_stamp(occurrence_utc)}"


def occurrence_stamp(occurrence_utc: datetime) -> str:
    """Local ``yyyymmddHHMM``; seconds appended only off the whole minute (a close rule)."""
    local = to_local(occurrence_utc)
    return local.strftime("%Y%m%d%H%M%S" if local.second else "%Y%m%d%H%M")


_ITEM_ID = re.compile(r"^p(\d+)\.(\d+)(?:-(\d+))?\.(\d+)\.(\d{12}(?:\d{2})?)$")


@dataclass(frozen=True)
class ProgrammeItemRef:
    """What a programme plan item id names."""

    programme_id: int
    item: int
    track: int
    rep: int
    local_stamp: str
    """occurrence start, local ``yyyymmddHHMM`` (``…SS`` when not on a whole minute)"""


def programme_item_of(text: str) -> ProgrammeItemRef | None:
    """Parse a programme plan item id; None for anything else (e.g. a broadcast's ``b-42``)."""
    match = _ITEM_ID.match(text)
    if match is None:
        return None
    programme, item, track, rep, stamp = match.groups()
    return ProgrammeItemRef(int(programme), int(item), int(track or 0), int(rep), stamp)


def expand(
    programme_id: int,
    title: str,
    priority: Priority,
    segments: list[Segment],
    occurrences: Iterable[datetime],
    url_for: Callable[[int], str],
) -> list[PlanEntry]:
    """The plan entries of every sounding segment at every occurrence (UTC instants)."""
    entries: list[PlanEntry] = []
    for occurrence in occurrences:
        for segment in segments:
            source = segment.source
            if source.kind == "silence":
                continue
            name = f"{title} — {segment_label(segment)}"
            audio = source.audio if source.audio is not None else source.fallback
            entries.append(
                PlanEntry(
                    broadcast_id=None,
                    title=name[:200],
                    start_at=occurrence + timedelta(milliseconds=segment.offset_ms),
                    priority=priority,
                    sha256=audio.sha256 if audio else "",
                    size_bytes=audio.size_bytes if audio else 0,
                    duration_ms=audio.duration_ms if audio else 0,
                    codec=audio.codec if audio else "opus",
                    audio_url=url_for(audio.asset_id) if audio else "",
                    item_id=item_id(programme_id, segment, occurrence),
                    stream_url=source.stream_url,
                    window_ms=source.length_ms if source.stream_url is not None else None,
                    volume_pct=segment.volume,
                )
            )
    return entries
