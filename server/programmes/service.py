"""Where programmes meet the database: targets, durations, overlaps, plan entries, timelines.

The pure parts (recurrence, composition, overlap, approval) get their inputs here and
nothing else touches SQL for programmes. Errors are :class:`ProgrammeError` with an HTTP
status, so the API and ``loaxa schedule`` report the same words.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from loaxa_protocol import Priority
from loaxa_protocol.errors import LoaxaError
from server.areas import subtree_codes
from server.locking import lock_schedule
from server.models import Area, AudioAsset, Broadcast, BroadcastTarget, Station
from server.planning.compiler import PlanEntry
from server.planning.rolling import Starts
from server.programmes.approval import OCCUPYING, ON_AIR
from server.programmes.conflicts import Clash, Occupant, Part, Span, find_clash
from server.programmes.models import (
    Programme,
    ProgrammeStation,
    StationGroup,
    StationGroupMember,
    TimelineEntry,
)
from server.programmes.recurrence import LOCAL_TZ, Timing, fmt_local, to_local, to_utc
from server.programmes.spec import (
    AudioItem,
    AudioSource,
    PlaylistItem,
    ProgrammeSpec,
    SilenceItem,
    StreamItem,
    TtsItem,
    item_files,
)
from server.programmes.timeline import (
    AudioInfo,
    ResolvedItem,
    Segment,
    Source,
    compose,
    expand,
    item_id,
    segment_label,
    total_ms,
)

CHECK_HORIZON = timedelta(days=366)
"""How far ahead overlaps are looked for at save."""
OCCURRENCE_LIMIT = 2000
"""At most this many occurrences of one programme are expanded for one check."""


class ProgrammeError(LoaxaError):
    """A programme that cannot be saved as given; ``status`` is the HTTP answer.

    ``code`` and ``params`` (optional) say the same as the English message in a form the
    web pages translate (``server.web.refusals``); the API answers with the message.
    """

    def __init__(
        self,
        message: str,
        status: int = 422,
        code: str = "",
        params: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.params = params or {}


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in sorted(set(values)))


def timing_of(spec: ProgrammeSpec) -> Timing:
    return Timing(start=spec.start, rrule=spec.rrule, exceptions=tuple(spec.exceptions))


# ------------------------------------------------------------------ targets


@dataclass(frozen=True)
class GroupView:
    """A station group as target resolution needs it (from the database, or a batch)."""

    area_code: str
    stations: frozenset[str]


@dataclass(frozen=True)
class ResolvedTargets:
    stations: set[str]
    station_areas: dict[str, str]
    """station → its area"""
    areas: set[str]
    """every area the targets name or lie in (for the permission check)"""
    group_areas: dict[str, str] = field(default_factory=dict)
    """group name → its owning area"""
    warnings: list[str] = field(default_factory=list)


def db_groups(session: Session, names: Iterable[str]) -> dict[str, GroupView]:
    """The named groups that exist, with their members."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = session.exec(
        select(StationGroup.name, StationGroup.area_code, StationGroupMember.station_id)
        .join(StationGroupMember, col(StationGroupMember.group_id) == col(StationGroup.id))
        .where(col(StationGroup.name).in_(wanted))
    ).all()
    members: dict[str, tuple[str, set[str]]] = {}
    for name, area_code, station_id in rows:
        members.setdefault(name, (area_code, set()))[1].add(station_id)
    return {name: GroupView(area, frozenset(ids)) for name, (area, ids) in members.items()}


def resolve_targets(
    session: Session,
    spec: ProgrammeSpec,
    groups: Mapping[str, GroupView] | None = None,
    strict: bool = True,
) -> ResolvedTargets:
    """Every station the targets reach now.

    ``groups`` overrides the database's groups of those names (a batch that also changes
    them). ``strict`` (a save): an unknown station, group or area is an error; area or
    group targets without any station yet are only a warning, since a station registered
    there later is taken in then. Not strict (re-resolving a saved programme): unknown
    names reach nothing.
    """
    targets = spec.targets
    wanted = set(targets.stations)
    rows = session.exec(select(Station.id, Station.area_code).where(col(Station.id).in_(wanted)))
    station_areas = dict(rows.all())
    if strict and wanted - station_areas.keys():
        raise ProgrammeError(
            f"targets.stations: unknown station(s) {_quoted(wanted - station_areas.keys())}"
        )
    named_groups = set(targets.groups)
    found_groups = db_groups(session, named_groups - set(groups or {}))
    found_groups.update({k: v for k, v in (groups or {}).items() if k in named_groups})
    if strict and named_groups - found_groups.keys():
        # A group without members is not in db_groups' join: look for the name itself.
        empty = set(
            session.exec(
                select(StationGroup.name).where(
                    col(StationGroup.name).in_(named_groups - found_groups.keys())
                )
            ).all()
        )
        if named_groups - found_groups.keys() - empty:
            unknown = named_groups - found_groups.keys() - empty
            raise ProgrammeError(f"targets.groups: unknown group(s) {_quoted(unknown)}")
    areas = set(targets.areas)
    known_areas = set(session.exec(select(Area.code).where(col(Area.code).in_(areas))).all())
    if strict and areas - known_areas:
        raise ProgrammeError(f"targets.areas: unknown area(s) {_quoted(areas - known_areas)}")
    areas &= known_areas
    found = dict(station_areas)
    members = set().union(*(g.stations for g in found_groups.values()))
    if members - found.keys():
        found.update(
            dict(
                session.exec(
                    select(Station.id, Station.area_code).where(
                        col(Station.id).in_(members - found.keys())
                    )
                ).all()
            )
        )
    if areas:
        codes = subtree_codes(session, areas)
        found.update(
            dict(
                session.exec(
                    select(Station.id, Station.area_code).where(col(Station.area_code).in_(codes))
                ).all()
            )
        )
    warnings: list[str] = []
    if strict and not found:
        warnings.append(
            "targets: no registered station is reached yet; a station registered later in "
            "the targeted area(s) or added to the targeted group(s) takes the programme in"
        )
    group_areas = {name: g.area_code for name, g in found_groups.items()}
    named_areas = areas | set(group_areas.values()) | set(found.values())
    return ResolvedTargets(set(found), found, named_areas, group_areas, warnings)


def stations_of(session: Session, programme_id: int) -> set[str]:
    rows = session.exec(
        select(ProgrammeStation.station_id).where(ProgrammeStation.programme_id == programme_id)
    )
    return set(rows.all())


# ------------------------------------------------------------------ items


def audio_infos(session: Session, ids: Iterable[int]) -> dict[int, AudioInfo]:
    wanted = set(ids)
    if not wanted:
        return {}
    assets = session.exec(select(AudioAsset).where(col(AudioAsset.id).in_(wanted))).all()
    return {
        a.id: AudioInfo(a.id, a.sha256, a.size_bytes, a.duration_ms, a.codec)
        for a in assets
        if a.id is not None
    }


def referenced_audio(spec: ProgrammeSpec) -> list[tuple[str, int]]:
    """(where, audio id) of every uploaded asset the programme names."""
    found: list[tuple[str, int]] = []

    def add(where: str, source: AudioSource | AudioItem | None) -> None:
        if source is not None and source.audio_id is not None:
            found.append((where, source.audio_id))

    for number, item in enumerate(spec.items, start=1):
        where = f"items[{number}]"
        if isinstance(item, AudioItem):
            add(where, item)
        elif isinstance(item, PlaylistItem):
            for track, source in enumerate(item.tracks, start=1):
                add(f"{where}.tracks[{track}]", source)
        elif isinstance(item, StreamItem):
            add(f"{where}.fallback", item.fallback)
    return found


def check_sources(session: Session, spec: ProgrammeSpec) -> None:
    """Every named asset exists and no ``file`` reference reached the server."""
    for number, item in enumerate(spec.items, start=1):
        files = item_files(item)
        if files:
            raise ProgrammeError(
                f"items[{number}]: file {files[0]!r} must be uploaded first and named by "
                "audio_id (`loaxa schedule apply` does this for you)"
            )
    refs = referenced_audio(spec)
    known = audio_infos(session, (i for _, i in refs))
    for where, audio_id in refs:
        if audio_id not in known:
            raise ProgrammeError(f"{where}: audio_id {audio_id} does not exist; upload it first")


def resolve_items(
    spec: ProgrammeSpec, rendered: dict[str, int], infos: dict[int, AudioInfo]
) -> list[ResolvedItem]:
    """The items with durations; TTS items use their rendered asset (``rendered``)."""
    resolved: list[ResolvedItem] = []

    def info(audio_id: int | None) -> AudioInfo:
        assert audio_id is not None and audio_id in infos, f"audio {audio_id} not loaded"
        return infos[audio_id]

    for number, item in enumerate(spec.items, start=1):
        tracks: tuple[Source, ...]
        if isinstance(item, AudioItem):
            audio = info(item.audio_id)
            tracks = (Source(audio.duration_ms, audio=audio),)
        elif isinstance(item, PlaylistItem):
            tracks = tuple(
                Source(info(t.audio_id).duration_ms, audio=info(t.audio_id)) for t in item.tracks
            )
        elif isinstance(item, TtsItem):
            audio = info(rendered.get(str(number)))
            tracks = (Source(audio.duration_ms, audio=audio),)
        elif isinstance(item, StreamItem):
            fallback = info(item.fallback.audio_id) if item.fallback is not None else None
            length = round(item.window_min * 60_000)
            tracks = (Source(length, stream_url=item.url, fallback=fallback),)
        else:
            assert isinstance(item, SilenceItem)
            tracks = (Source(round(item.seconds * 1000)),)
        resolved.append(
            ResolvedItem(
                index=number,
                title=item.title or _default_title(item),
                kind=item.kind,
                tracks=tracks,
                volume=item.volume,
                repeat=item.repeat,
                gap_ms=round(item.gap_s * 1000),
            )
        )
    return resolved


def _default_title(item: object) -> str:
    if isinstance(item, TtsItem):
        text = item.text.strip().replace("\n", " ")
        return text if len(text) <= 40 else text[:39] + "…"
    if isinstance(item, StreamItem):
        return f"tiếp sóng {item.url}"
    return str(getattr(item, "kind", "item"))


def all_audio_ids(spec: ProgrammeSpec, rendered: dict[str, int]) -> set[int]:
    return {i for _, i in referenced_audio(spec)} | set(rendered.values())


def segments_of(session: Session, spec: ProgrammeSpec, rendered: dict[str, int]) -> list[Segment]:
    infos = audio_infos(session, all_audio_ids(spec, rendered))
    return compose(resolve_items(spec, rendered, infos))


def check_speech_fits(spec: ProgrammeSpec, rendered: dict[str, int], session: Session) -> None:
    """A TTS item with a ``slot_s`` must be spoken within it."""
    infos = audio_infos(session, rendered.values())
    for number, item in enumerate(spec.items, start=1):
        if isinstance(item, TtsItem) and item.slot_s is not None:
            audio = infos[rendered[str(number)]]
            if audio.duration_ms > item.slot_s * 1000:
                raise ProgrammeError(
                    f"items[{number}]: the text takes {audio.duration_ms / 1000:.1f} s to speak "
                    f"but its slot is {item.slot_s:g} s; shorten the text or widen slot_s",
                    code="speech_too_long",
                    params={
                        "item": number,
                        "spoken_s": round(audio.duration_ms / 1000, 1),
                        "slot_s": item.slot_s,
                    },
                )


# ------------------------------------------------------------------ overlaps


def occupant(
    key: str,
    name: str,
    priority: Priority,
    stations: Iterable[str],
    timing: Timing,
    segments: list[Segment],
    start: datetime,
    until: datetime,
) -> Occupant:
    length = timedelta(milliseconds=max(total_ms(segments), 1))
    spans = tuple(
        Span(t, t + length) for t in timing.between(start - length, until, OCCURRENCE_LIMIT)
    )
    parts = tuple(
        Part(
            s.offset_ms,
            s.length_ms,
            f"item {s.item} {s.title!r}"
            + (f" #{s.track}" if s.track else "")
            + (f" (lần {s.rep})" if s.rep > 1 else ""),
        )
        for s in segments
    )
    return Occupant(key, name, priority, frozenset(stations), spans, parts)


def others_for(
    session: Session,
    priority: Priority,
    stations: set[str],
    start: datetime,
    until: datetime,
    exclude_programme: int | None,
    ignore: frozenset[int] = frozenset(),
) -> list[Occupant]:
    """Programmes and broadcasts at ``priority`` reaching any of ``stations``.

    ``ignore``: programmes whose stored version does not count (a batch replaces them later).
    """
    found: list[Occupant] = []
    rows = session.exec(
        select(Programme, ProgrammeStation.station_id)
        .join(ProgrammeStation, col(ProgrammeStation.programme_id) == col(Programme.id))
        .where(col(ProgrammeStation.station_id).in_(stations))
        .where(col(Programme.priority) == priority)
        .where(col(Programme.state).in_(OCCUPYING))
        .where(col(Programme.proposal).is_(False))
    ).all()
    by_programme: dict[int, tuple[Programme, set[str]]] = {}
    for programme, station_id in rows:
        assert programme.id is not None
        if programme.id == exclude_programme or programme.id in ignore:
            continue
        by_programme.setdefault(programme.id, (programme, set()))[1].add(station_id)
    for programme_id, (programme, reached) in sorted(by_programme.items()):
        spec = ProgrammeSpec.model_validate(programme.spec)
        segments = segments_of(session, spec, programme.rendered)
        found.append(
            occupant(
                f"programme {programme_id}",
                f"{programme.title} [{programme.key}]",
                priority,
                reached,
                timing_of(spec),
                segments,
                start,
                until,
            )
        )
    broadcasts = session.exec(
        select(Broadcast, AudioAsset, BroadcastTarget.station_id)
        .join(BroadcastTarget, col(BroadcastTarget.broadcast_id) == col(Broadcast.id))
        .join(AudioAsset, col(AudioAsset.id) == col(Broadcast.audio_id))
        .where(col(BroadcastTarget.station_id).in_(stations))
        .where(col(Broadcast.priority) == priority)
        .where(col(Broadcast.start_at) < until)
        .where(col(Broadcast.start_at) > start - timedelta(days=1))
    ).all()
    by_broadcast: dict[int, tuple[Broadcast, AudioAsset, set[str]]] = {}
    for broadcast, audio, station_id in broadcasts:
        assert broadcast.id is not None
        by_broadcast.setdefault(broadcast.id, (broadcast, audio, set()))[2].add(station_id)
    for broadcast_id, (broadcast, audio, reached) in sorted(by_broadcast.items()):
        end = broadcast.start_at + timedelta(milliseconds=audio.duration_ms)
        if end <= start:
            continue
        found.append(
            Occupant(
                f"broadcast {broadcast_id}",
                f"broadcast {broadcast_id} {broadcast.title!r}",
                priority,
                frozenset(reached),
                (Span(broadcast.start_at, end),),
            )
        )
    return found


def hold_schedule(session: Session) -> None:
    """Take the schedule lock (``server.locking``) until this transaction ends.

    Every write that can put a programme into a slot (save, batch, submit of a rejected
    one, approve) takes it *before* the overlap check that decides: two operators
    saving or approving into one slot at the same instant are checked one after the
    other, so the second sees the first and is refused.
    """
    lock_schedule(session, Programme.__table__)  # type: ignore[attr-defined]


def check_overlaps(
    session: Session,
    programme_id: int | None,
    spec: ProgrammeSpec,
    segments: list[Segment],
    stations: set[str],
    now: datetime,
    horizon: timedelta = CHECK_HORIZON,
    ignore: frozenset[int] = frozenset(),
) -> None:
    """Raise a 409 naming both items and the local time of the first clash, if any."""
    if spec.proposal:
        return
    until = now + horizon
    mine = occupant(
        f"programme {programme_id or 'new'}",
        f"{spec.title} [{spec.key}]",
        spec.priority,
        stations,
        timing_of(spec),
        segments,
        now,
        until,
    )
    clash: Clash | None = find_clash(
        mine, others_for(session, spec.priority, stations, now, until, programme_id, ignore)
    )
    if clash is not None:
        raise ProgrammeError(
            clash.message,
            status=409,
            code="clash",
            params={
                "station": clash.station_id,
                "at": clash.at,
                "first": clash.first,
                "second": clash.second,
                "priority": clash.priority.value,
                "more": clash.more,
            },
        )


# ------------------------------------------------------------------ plans


ON_AIR_PAIRS = (
    sa_select(col(ProgrammeStation.programme_id), col(ProgrammeStation.station_id))
    .join(Programme, col(ProgrammeStation.programme_id) == col(Programme.id))
    .where(col(Programme.state).in_(ON_AIR))
    .where(col(Programme.proposal).is_(False))
)
"""(programme, station) of every approved programme; built once, as it is read on the way
of every plan to its station"""
ON_AIR_PAIRS_OF = ON_AIR_PAIRS.where(
    col(ProgrammeStation.station_id).in_(bindparam("wanted", expanding=True))
)


def _on_air(
    session: Session, station_ids: set[str] | None = None
) -> dict[int, tuple[Programme, list[str]]]:
    """Approved programmes (by id) with the stations (of ``station_ids``) they reach.

    Pairs and programmes are read apart: joined, every programme's JSON would be loaded
    and decoded once per station it reaches (5,000 times for 5 programmes × 1,000).
    """
    if station_ids is None:
        pairs = session.execute(ON_AIR_PAIRS).all()
    else:
        pairs = session.execute(ON_AIR_PAIRS_OF, {"wanted": list(station_ids)}).all()
    stations: dict[int, list[str]] = defaultdict(list)
    for programme_id, station_id in pairs:
        stations[programme_id].append(station_id)
    if not stations:
        return {}
    programmes = session.exec(
        select(Programme).where(col(Programme.id).in_(stations)).order_by(col(Programme.id))
    ).all()
    return {p.id: (p, sorted(stations[p.id])) for p in programmes if p.id is not None}


def programme_entries(
    session: Session,
    station_ids: Iterable[str],
    start: datetime,
    until: datetime,
    url_for: Callable[[int], str],
) -> dict[str, list[PlanEntry]]:
    """Plan entries of every approved programme occurrence on these stations in the window.

    An occurrence that started before ``start`` but is still playing is included (the
    compiler keeps items whose audio has not ended).
    """
    entries: dict[str, list[PlanEntry]] = defaultdict(list)
    for programme_id, (programme, stations) in _on_air(session, set(station_ids)).items():
        spec = ProgrammeSpec.model_validate(programme.spec)
        segments = segments_of(session, spec, programme.rendered)
        length = timedelta(milliseconds=total_ms(segments))
        occurrences = timing_of(spec).between(start - length, until, OCCURRENCE_LIMIT)
        expanded = expand(
            programme_id, programme.title, programme.priority, segments, occurrences, url_for
        )
        for station_id in stations:
            entries[station_id].extend(expanded)
    return entries


def programme_starts(session: Session, start: datetime, until: datetime) -> list[Starts]:
    """Per approved programme: its stations and the sorted starts of its sounding items
    in ``[start, until)`` (what a roll-forward looks at; no URLs are signed)."""
    found: list[Starts] = []
    for programme, stations in _on_air(session).values():
        spec = ProgrammeSpec.model_validate(programme.spec)
        offsets = [
            timedelta(milliseconds=s.offset_ms)
            for s in segments_of(session, spec, programme.rendered)
            if s.source.kind != "silence"
        ]
        if not offsets:
            continue
        occurrences = timing_of(spec).between(start - offsets[-1], until, OCCURRENCE_LIMIT)
        starts = sorted(
            t + offset for t in occurrences for offset in offsets if start <= t + offset < until
        )
        found.append(Starts(stations, starts))
    return found


# ------------------------------------------------------------------ timeline


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The local day as UTC instants [00:00, next 00:00)."""
    start = datetime(day.year, day.month, day.day, tzinfo=LOCAL_TZ)
    return to_utc(start.replace(tzinfo=None)), to_utc(
        (start + timedelta(days=1)).replace(tzinfo=None)
    )


def _hm(instant: datetime) -> str:
    return to_local(instant).strftime("%Y-%m-%d %H:%M:%S")


def station_timeline(session: Session, station_id: str, day: date) -> list[TimelineEntry]:
    """What the station plays on a local day: programmes (any live state) and broadcasts.

    Drafts and submitted programmes are shown with ``on_air`` false, so an operator sees
    the week being built; ``preempted_by`` names a higher-priority item cutting in.
    """
    start, end = day_bounds(day)
    entries: list[TimelineEntry] = []
    rows = session.exec(
        select(Programme)
        .join(ProgrammeStation, col(ProgrammeStation.programme_id) == col(Programme.id))
        .where(ProgrammeStation.station_id == station_id)
        .where(col(Programme.state).in_(OCCUPYING))
        .where(col(Programme.proposal).is_(False))
        .order_by(col(Programme.id))
    ).all()
    for programme in rows:
        assert programme.id is not None
        spec = ProgrammeSpec.model_validate(programme.spec)
        segments = segments_of(session, spec, programme.rendered)
        length = timedelta(milliseconds=total_ms(segments))
        for occurrence in timing_of(spec).between(start - length, end, OCCURRENCE_LIMIT):
            for segment in segments:
                seg_start = occurrence + timedelta(milliseconds=segment.offset_ms)
                seg_end = seg_start + timedelta(milliseconds=segment.length_ms)
                if seg_end <= start or seg_start >= end:
                    continue
                silent = segment.source.kind == "silence"
                title = segment_label(segment)
                entries.append(
                    TimelineEntry(
                        start_at=seg_start,
                        end_at=seg_end,
                        start_local=_hm(seg_start),
                        end_local=_hm(seg_end),
                        kind=segment.source.kind,
                        title=f"{programme.title} — {title}",
                        item_id=None if silent else item_id(programme.id, segment, occurrence),
                        priority=programme.priority,
                        volume=segment.volume,
                        programme_id=programme.id,
                        broadcast_id=None,
                        state=programme.state.value,
                        on_air=programme.state in ON_AIR,
                    )
                )
    broadcasts = session.exec(
        select(Broadcast, AudioAsset)
        .join(BroadcastTarget, col(BroadcastTarget.broadcast_id) == col(Broadcast.id))
        .join(AudioAsset, col(AudioAsset.id) == col(Broadcast.audio_id))
        .where(BroadcastTarget.station_id == station_id)
        .where(col(Broadcast.start_at) < end)
        .where(col(Broadcast.start_at) > start - timedelta(days=1))
    ).all()
    for broadcast, audio in broadcasts:
        b_end = broadcast.start_at + timedelta(milliseconds=audio.duration_ms)
        if b_end <= start:
            continue
        entries.append(
            TimelineEntry(
                start_at=broadcast.start_at,
                end_at=b_end,
                start_local=_hm(broadcast.start_at),
                end_local=_hm(b_end),
                kind="audio",
                title=broadcast.title or f"broadcast {broadcast.id}",
                item_id=f"b-{broadcast.id}",
                priority=broadcast.priority,
                volume=None,
                programme_id=None,
                broadcast_id=broadcast.id,
                state="scheduled",
                on_air=True,
            )
        )
    entries.sort(key=lambda e: (e.start_at, -e.priority.rank, e.item_id or ""))
    sounding = [e for e in entries if e.kind != "silence" and e.on_air]
    for entry in entries:
        for other in sounding:
            if (
                other.priority.rank > entry.priority.rank
                and other.start_at < entry.end_at
                and other.end_at > entry.start_at
            ):
                entry.preempted_by = (
                    f"{other.title} ({other.priority.value}, {fmt_local(other.start_at)})"
                )
                break
    return entries
