"""What an approver reads before approving, and the queue of what waits for them.

A programme page shows every item with a player (speech too: its rendered audio), the
stations by name, and, once a programme has been approved before, what changed since
(``server.programmes.changes`` against the copy kept at approval). The queue lists the
submitted programmes the reader may approve; the overview shows its length.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, select

from server.api.deps import SessionDep
from server.audit.models import AuditEntry
from server.auth.actor import Actor
from server.auth.permissions import Action
from server.i18n import N_, gettext
from server.models import Station
from server.programmes import views
from server.programmes.access import may_approve
from server.programmes.approval import ProgrammeState
from server.programmes.changes import Changes, compare
from server.programmes.models import Programme
from server.programmes.service import stations_of
from server.programmes.spec import (
    AudioItem,
    ItemSpec,
    PlaylistItem,
    ProgrammeSpec,
    SilenceItem,
    StreamItem,
    TtsItem,
)
from server.web.common import PageActorDep, PageRoute, area_names, may_somewhere, render
from server.web.programme_form import ITEM_KINDS
from server.web.recurrence_words import describe

router = APIRouter(route_class=PageRoute)

KIND_NAMES = {**ITEM_KINDS, "playlist": N_("Several audio files")}
QUEUE_MAX = 200


@dataclass
class Player:
    label: str
    audio_id: int


@dataclass
class ItemView:
    number: int
    kind: str
    kind_label: str
    title: str
    text: str = ""
    url: str = ""
    seconds: float = 0
    repeat: int = 1
    volume: int | None = None
    players: list[Player] = field(default_factory=list)


def item_view(number: int, item: ItemSpec, rendered: dict[str, int]) -> ItemView:
    """One item in words, with a player for each sound it plays."""
    view = ItemView(
        number=number,
        kind=item.kind,
        kind_label=KIND_NAMES.get(item.kind, item.kind),
        title=item.title,
        repeat=item.repeat,
        volume=item.volume,
    )
    if isinstance(item, AudioItem) and item.audio_id is not None:
        view.players.append(Player(gettext("Listen"), item.audio_id))
    elif isinstance(item, PlaylistItem):
        for track, source in enumerate(item.tracks, start=1):
            if source.audio_id is not None:
                view.players.append(Player(gettext("Track %(n)s") % {"n": track}, source.audio_id))
    elif isinstance(item, TtsItem):
        view.text = item.text
        if str(number) in rendered:
            view.players.append(Player(gettext("Listen to the speech"), rendered[str(number)]))
    elif isinstance(item, StreamItem):
        view.url = item.url
        view.seconds = item.window_min * 60
        if item.fallback is not None and item.fallback.audio_id is not None:
            view.players.append(
                Player(gettext("Played if the stream fails"), item.fallback.audio_id)
            )
    elif isinstance(item, SilenceItem):
        view.seconds = item.seconds
    return view


def item_summary(item: ItemSpec) -> str:
    """An item in a few words, for the list of changes."""
    kind = gettext(KIND_NAMES.get(item.kind, item.kind))
    if isinstance(item, TtsItem):
        text = item.text.strip().replace("\n", " ")
        return f"{kind}: “{text if len(text) <= 80 else text[:79] + '…'}”"
    if isinstance(item, StreamItem):
        return f"{kind}: {item.url}"
    if isinstance(item, SilenceItem):
        return f"{kind}: {item.seconds:g} s"
    if isinstance(item, AudioItem):
        return f"{kind}: {item.title or '#' + str(item.audio_id)}"
    return f"{kind}: {item.title}" if item.title else kind


@dataclass
class StationRow:
    id: str
    name: str
    area: str


def station_rows(session: Session, ids: Iterable[str]) -> list[StationRow]:
    """The stations by name with their commune's name (an unknown id stays as it is)."""
    wanted = set(ids)
    found = {s.id: s for s in session.exec(select(Station).where(col(Station.id).in_(wanted)))}
    names = area_names(session, {s.area_code for s in found.values()})
    rows = [
        StationRow(sid, found[sid].name, names.get(found[sid].area_code, found[sid].area_code))
        if sid in found
        else StationRow(sid, sid, "")
        for sid in wanted
    ]
    return sorted(rows, key=lambda r: (r.area, r.name, r.id))


def when_words(spec: ProgrammeSpec) -> str:
    """The timing in plain words (Thứ 2 đến Thứ 7, 05:00); a one-off names its day too."""
    fmt = "%H:%M" if spec.rrule else "%d/%m/%Y %H:%M"
    return describe(spec.rrule, spec.start.strftime(fmt), gettext)


def review(session: Session, programme: Programme, spec: ProgrammeSpec) -> dict[str, Any]:
    """The programme page's review values: items, stations by name, changes since approval."""
    assert programme.id is not None
    stations = stations_of(session, programme.id)
    values: dict[str, Any] = {
        "items": [item_view(n, item, programme.rendered) for n, item in enumerate(spec.items, 1)],
        "station_rows": station_rows(session, stations),
        "changes": None,
    }
    if programme.approved_spec is None:
        # Approved before copies were kept (migration 0005): say so rather than "new".
        values["approved_without_copy"] = approved_before(session, programme.id)
        return values
    approved = ProgrammeSpec.model_validate(programme.approved_spec)
    changes: Changes = compare(approved, programme.approved_stations or [], spec, stations)
    names = {
        r.id: f"{r.name} ({r.area})" if r.area else r.name
        for r in station_rows(session, {*changes.stations_added, *changes.stations_removed})
    }
    values["changes"] = changes
    values["change_words"] = {
        "added": [(n, item_summary(i)) for n, i in changes.items_added],
        "removed": [(n, item_summary(i)) for n, i in changes.items_removed],
        "schedule": (when_words(changes.schedule[0]), when_words(changes.schedule[1]))
        if changes.schedule
        else None,
        "stations_added": [names.get(s, s) for s in changes.stations_added],
        "stations_removed": [names.get(s, s) for s in changes.stations_removed],
    }
    return values


def approved_before(session: Session, programme_id: int) -> bool:
    """Whether the audit log records an approval of this programme."""
    found = session.exec(
        select(AuditEntry.id)
        .where(AuditEntry.object_type == "programme")
        .where(AuditEntry.object_id == str(programme_id))
        .where(AuditEntry.action == "programme.approve")
        .limit(1)
    ).first()
    return found is not None


def approval_queue(session: Session, actor: Actor) -> list[Programme]:
    """Submitted programmes the reader may approve (oldest first: first come, first read)."""
    if not may_somewhere(actor, Action.PROGRAMME_APPROVE):
        return []
    waiting = views.list_programmes(session, actor, state=ProgrammeState.SUBMITTED, limit=QUEUE_MAX)
    mine = [p for p in waiting if may_approve(session, actor, p)]
    return sorted(mine, key=lambda p: (p.state_at, p.id or 0))


@router.get("/programmes/approvals", response_class=HTMLResponse)
def approvals_page(request: Request, session: SessionDep, actor: PageActorDep) -> HTMLResponse:
    """What waits for the reader's approval, with who sent it and when it first plays."""
    rows = []
    for programme in approval_queue(session, actor):
        assert programme.id is not None
        spec = ProgrammeSpec.model_validate(programme.spec)
        rows.append(
            {
                "programme": programme,
                "when": when_words(spec),
                "stations": len(stations_of(session, programme.id)),
                "changed": programme.approved_spec is not None,
            }
        )
    return render(request, "approvals.html", {"actor": actor, "rows": rows})
