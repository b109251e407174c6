"""What a station's play-log item id stands for, in words a clerk recognises.

Stations report the wire ids of what they played (``p2.1.1.202612090530``, ``b-42``, an
alert's id). A page shows the programme's, bulletin's or alert's title and, for a
programme, the local time of that occurrence, never the id itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from server.alerts.models import AlertRecord
from server.i18n import gettext
from server.local_time import LOCAL_TZ
from server.models import Broadcast
from server.programmes.models import Programme
from server.programmes.timeline import programme_item_of
from server.reports.models import PlannedItem


def _stamp_words(stamp: str) -> str:
    """``202612090530`` (local) → ``05:30 09/12/2026``."""
    try:
        moment = datetime.strptime(stamp[:12], "%Y%m%d%H%M")
    except ValueError:
        return stamp
    return moment.strftime("%H:%M %d/%m/%Y")


def item_names(session: Session, station_id: str, item_ids: Iterable[str]) -> dict[str, str]:
    """``{item_id: words}`` for every id we can name; an unknown id is left out."""
    wanted = {i for i in item_ids if i}
    if not wanted:
        return {}
    names: dict[str, str] = {}
    planned = session.exec(
        select(PlannedItem).where(
            PlannedItem.station_id == station_id, col(PlannedItem.item_id).in_(wanted)
        )
    ).all()
    for row in planned:
        if row.title:
            local = row.start_at.astimezone(LOCAL_TZ).strftime("%H:%M %d/%m/%Y")
            names[row.item_id] = f"{row.title} ({local})"
    rest = wanted - names.keys()
    refs = {i: programme_item_of(i) for i in rest}
    programme_ids = {ref.programme_id for ref in refs.values() if ref is not None}
    titles = {
        p.id: p.title
        for p in session.exec(select(Programme).where(col(Programme.id).in_(programme_ids)))
    }
    for item, ref in refs.items():
        if ref is not None and ref.programme_id in titles:
            names[item] = gettext("%(title)s, item %(n)s (%(at)s)") % {
                "title": titles[ref.programme_id],
                "n": ref.item,
                "at": _stamp_words(ref.local_stamp),
            }
    broadcasts = {int(i[2:]): i for i in rest if i.startswith("b-") and i[2:].isdigit()}
    for row in session.exec(select(Broadcast).where(col(Broadcast.id).in_(broadcasts))):
        names[broadcasts[row.id]] = row.title or gettext("Bulletin %(id)s") % {"id": row.id}
    for alert in session.exec(select(AlertRecord).where(col(AlertRecord.alert_id).in_(rest))):
        words = gettext("Drill: %(title)s") if alert.drill else gettext("Alert: %(title)s")
        names[alert.alert_id] = words % {"title": alert.title}
    return names
