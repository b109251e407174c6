"""Column headings of the CSV files, in the language of the page that asked for them.

The API's CSV keeps its machine names (``station_id``, ``played_s``) for programs that
read it; a page's download link adds ``lang=vi`` (or ``en``) and a clerk opening the
file in a spreadsheet reads "Mã trạm", "Đã phát (giây)".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from server.i18n import N_, gettext, language
from server.i18n.reasons import station_reason
from server.local_time import LOCAL_TZ

if TYPE_CHECKING:  # the as-run module imports this one and stays free of the ORM
    from server.alerts.models import AlertDetail

HEADINGS = {
    # as-run report, per station
    "station_id": N_("Station code"),
    "station_name": N_("Station"),
    "area_code": N_("Area code"),
    "planned": N_("Planned"),
    "played": N_("Played"),
    "interrupted": N_("Interrupted"),
    "failed": N_("Failed"),
    "missed": N_("Missed"),
    "pending": N_("Not yet due"),
    "unplanned": N_("Played without a plan"),
    "emergency": N_("Emergency items"),
    "emergency_played": N_("Emergency items played"),
    "requested_s": N_("Requested time (s)"),
    "played_s": N_("Played time (s)"),
    "played_pct": N_("Played (%)"),
    "drills": N_("Drills"),
    "drills_played": N_("Drills played"),
    # as-run report, per item
    "item_id": N_("Item code"),
    "title": N_("Title"),
    "priority": N_("Priority"),
    "source": N_("Source"),
    "planned_start_local": N_("Planned start (Vietnam time)"),
    "outcome": N_("Outcome"),
    "started_local": N_("Started (Vietnam time)"),
    "finished_local": N_("Finished (Vietnam time)"),
    "reason": N_("Reason"),
    # as-run report, live sessions
    "live_sessions": N_("Live sessions"),
    "live_s": N_("Live time (s)"),
    "session_id": N_("Live session code"),
    "created_by": N_("Went live"),
    "sounded_s": N_("Sounded (s)"),
    "rounds": N_("Times started"),
    "end_reason": N_("How it ended"),
    # alert report
    "drill": N_("Drill or real"),
    "name": N_("Station"),
    "state": N_("State"),
    "received_at": N_("Received (Vietnam time)"),
    "playing_at": N_("Started playing (Vietnam time)"),
    "finished_at": N_("Finished (Vietnam time)"),
    "link_status": N_("Connection"),
    "last_seen_at": N_("Last seen (Vietnam time)"),
    "total": N_("Total"),
}


def headings(columns: Sequence[str], lang: str | None) -> list[str]:
    """``columns`` as they are (no ``lang``), or translated into ``lang``."""
    if lang is None:
        return list(columns)
    with language(lang):
        return [gettext(HEADINGS[c]) if c in HEADINGS else c for c in columns]


def word(code: str, lang: str | None) -> str:
    """One coded value (``total``, ``played``) in ``lang``; as it is without one."""
    if lang is None or code not in HEADINGS:
        return code
    with language(lang):
        return gettext(HEADINGS[code])


ALERT_CSV_COLUMNS = (
    "drill", "station_id", "name", "area_code", "state", "received_at", "playing_at",
    "finished_at", "reason", "link_status", "last_seen_at",
)  # fmt: skip
ALERT_WORDS = {
    # delivery states
    "pending": N_("Not yet received"),
    "received": N_("Received"),
    "playing": N_("Playing"),
    "finished": N_("Played"),
    "failed": N_("Failed"),
    "refused": N_("Refused"),
    "cancelled": N_("Cancelled"),
    # alert states
    "awaiting_confirmation": N_("Waiting for a second officer"),
    "active": N_("On the air"),
    "expired": N_("Expired"),
    # severities
    "extreme": N_("Extreme: danger to life"),
    "severe": N_("Severe"),
    "moderate": N_("Moderate"),
    "minor": N_("Minor"),
    # connection
    "online": N_("Online"),
    "degraded": N_("Has a problem"),
    "offline": N_("Disconnected"),
    "stopped": N_("Stopped"),
    "unknown": N_("Unknown"),
}


def _said(code: str) -> str:
    return gettext(ALERT_WORDS[code]) if code in ALERT_WORDS else code


def _at(moment: datetime | None) -> str:
    return moment.astimezone(LOCAL_TZ).strftime("%d/%m/%Y %H:%M:%S") if moment else "—"


def alert_report_words(detail: AlertDetail) -> str:
    """An alert's final report in the current language: a heading that says whether it
    was a drill, who sent it and when, then one row per station with translated states."""
    out = io.StringIO()
    kind = gettext("DRILL: not a real alert") if detail.drill else gettext("REAL ALERT")
    out.write(f"# {kind}\n")
    heading = gettext("Alert %(id)s: %(title)s; severity %(severity)s; state %(state)s")
    said = {"id": detail.id, "title": detail.title, "severity": _said(detail.severity),
            "state": _said(detail.state.value)}  # fmt: skip
    out.write("# " + heading % said + "\n")
    who = gettext(
        "Prepared by %(by)s at %(at)s; confirmed by %(confirmed)s; sent %(sent)s; "
        "expires %(expires)s; cancelled %(cancelled)s"
    )
    out.write("# " + who % {
        "by": detail.created_by, "at": _at(detail.created_at),
        "confirmed": detail.confirmed_by or "—", "sent": _at(detail.sent_at),
        "expires": _at(detail.expires_at), "cancelled": _at(detail.cancelled_at),
    } + "\n")  # fmt: skip
    out.write("# " + "; ".join(f"{_said(k)}: {v}" for k, v in detail.counts.items()) + "\n")
    writer = csv.writer(out)
    writer.writerow([gettext(HEADINGS[c]) for c in ALERT_CSV_COLUMNS])
    drill = gettext("Drill") if detail.drill else gettext("Real")
    for s in detail.stations:
        writer.writerow([
            drill, s.station_id, s.name, s.area_code, _said(s.state.value), _at(s.received_at),
            _at(s.playing_at), _at(s.finished_at), station_reason(s.reason) if s.reason else "",
            _said(s.link_status), _at(s.last_seen_at),
        ])  # fmt: skip
    return out.getvalue()
