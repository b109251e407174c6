"""Which bulletins a commune's residents may hear again, from what its stations played.

A bulletin is listed when, in the last ``DAYS`` days, a station of the commune reported
it ``played`` whole, it belongs to an approved (or since archived) programme that is not
a proposal and that no operator hid (``Programme.public``). Alerts, drills and one-off
broadcasts are never listed: alerts are not plan items, and one-off broadcasts skip
approval. One entry per programme occurrence and audio file, however many stations and
repetitions carried it. Only what a resident needs leaves this module: titles, the time
it aired and the audio's content hash; no station, operator or database id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from server.areas import subtree_codes
from server.models import Area, AreaLevel, AudioAsset, Station, StationEvent
from server.programmes.approval import ProgrammeState
from server.programmes.models import Programme
from server.reports.planned import PlannedItem

DAYS = 7
LISTED_STATES = (ProgrammeState.APPROVED, ProgrammeState.ARCHIVED)
_PROGRAMME_ITEM = re.compile(r"p(\d+)\.[^.]+\.\d+\.(\d{12,14})")
"""``p12.3.1.202612070500``: programme 12, item 3, first play, occurrence (local time)."""


@dataclass(frozen=True)
class Aired:
    title: str
    """The programme's title."""
    part: str
    """The item's own title (a programme may carry several)."""
    aired_at: datetime
    sha256: str
    mime_type: str
    size_bytes: int
    duration_ms: int


def communes(session: Session) -> list[Area]:
    """Communes with at least one station: the public index, by name."""
    codes = set(session.exec(select(Station.area_code).distinct()).all())
    rows = session.exec(
        select(Area).where(col(Area.code).in_(codes), Area.level == AreaLevel.COMMUNE)
    ).all()
    return sorted(rows, key=lambda area: area.name)


def aired_bulletins(session: Session, commune: str, now: datetime) -> list[Aired]:
    """The commune's listable bulletins of the last ``DAYS`` days, newest first."""
    stations = session.exec(
        select(Station.id).where(col(Station.area_code).in_(subtree_codes(session, [commune])))
    ).all()
    since = now - timedelta(days=DAYS)
    planned = session.exec(
        select(PlannedItem).where(
            col(PlannedItem.station_id).in_(stations),
            col(PlannedItem.start_at) >= since,
            col(PlannedItem.start_at) <= now,
            col(PlannedItem.item_id).startswith("p"),
            PlannedItem.source == "audio",
            col(PlannedItem.sha256).is_not(None),
        )
    ).all()
    played = set(
        session.exec(
            select(StationEvent.station_id, StationEvent.item_id).where(
                col(StationEvent.station_id).in_(stations),
                StationEvent.kind == "played",
                col(StationEvent.item_id).in_({p.item_id for p in planned}),
            )
        ).all()
    )
    aired = [p for p in planned if (p.station_id, p.item_id) in played]
    ids = {int(m[1]) for p in aired if (m := _PROGRAMME_ITEM.fullmatch(p.item_id))}
    programmes = {
        p.id: p
        for p in session.exec(
            select(Programme).where(
                col(Programme.id).in_(ids),
                col(Programme.public),
                col(Programme.proposal).is_(False),
                col(Programme.state).in_(LISTED_STATES),
            )
        ).all()
    }
    assets = {
        a.sha256: a
        for a in session.exec(
            select(AudioAsset).where(
                col(AudioAsset.sha256).in_({p.sha256 for p in aired}),
                col(AudioAsset.library).is_(None),  # the canned alert library is never listed
            )
        ).all()
    }
    entries: dict[tuple[int, str, str], Aired] = {}
    for item in sorted(aired, key=lambda p: p.start_at):
        match = _PROGRAMME_ITEM.fullmatch(item.item_id)
        programme = programmes.get(int(match[1])) if match else None
        asset = assets.get(item.sha256 or "")
        if match is None or programme is None or asset is None:
            continue
        key = (int(match[1]), match[2], asset.sha256)
        entries.setdefault(
            key,
            Aired(
                title=programme.title,
                part=item.title,
                aired_at=item.start_at,
                sha256=asset.sha256,
                mime_type=asset.mime_type,
                size_bytes=asset.size_bytes,
                duration_ms=asset.duration_ms,
            ),
        )
    return sorted(entries.values(), key=lambda e: e.aired_at, reverse=True)
