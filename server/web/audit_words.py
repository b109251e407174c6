"""Audit entries as sentences in the reader's language, with local times.

The log stores machine facts (``programme.approve``, ``{"state": "approved"}``, UTC
ISO times); an auditor reading the page needs "Duyệt chương trình #3" and "trạng thái:
Đã duyệt" at Vietnam's time. :func:`describe` builds those words from the catalogues;
keys it does not know are left to the raw record, which the page keeps folded away
(marked as data, not language) for anyone who must see exactly what was stored.
Pure apart from gettext: no database, no FastAPI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.alerts import canned
from server.i18n import N_, current_language, gettext
from server.i18n.reasons import PERMISSIONS, STATION_REASONS
from server.web.common import PRIORITY_LABELS, ROLE_LABELS, local_time, seconds

ACTIONS = {
    "auth.login": N_("Signed in"),
    "auth.logout": N_("Signed out"),
    "auth.login_failed": N_("Failed sign-in"),
    "auth.totp_enroll": N_("Started setting up two-step sign-in"),
    "auth.totp_enabled": N_("Turned on two-step sign-in"),
    "audio.upload": N_("Uploaded audio"),
    "audio.tts": N_("Made speech from a text"),
    "broadcast.create": N_("Scheduled a bulletin"),
    "user.bootstrap": N_("Created the first administrator"),
    "user.create": N_("Created a user"),
    "user.update": N_("Changed a user"),
    "user.grant": N_("Gave a role"),
    "user.revoke_grant": N_("Took a role away"),
    "token.create": N_("Created an API token"),
    "token.revoke": N_("Revoked an API token"),
    "alert.create": N_("Prepared an alert (waiting for a second officer)"),
    "alert.send": N_("Sent an alert"),
    "alert.confirm": N_("Confirmed an alert"),
    "alert.cancel": N_("Cancelled an alert"),
    "alarm.acknowledge": N_("Acknowledged an alarm"),
    "programme.create": N_("Created a programme"),
    "programme.update": N_("Changed a programme"),
    "programme.submit": N_("Sent a programme for approval"),
    "programme.approve": N_("Approved a programme"),
    "programme.reject": N_("Rejected a programme"),
    "programme.archive": N_("Archived a programme"),
    "programme.edit": N_("Reopened a programme for editing"),
    "programme.hold": N_("Held a programme back from stations"),
    "programme.public": N_("Changed what residents can replay"),
    "station_group.create": N_("Created a station group"),
    "station_group.update": N_("Changed a station group"),
    "station_group.delete": N_("Deleted a station group"),
    "approval_rule.set": N_("Set the approval rule"),
    "station.register": N_("Registered a station"),
    "station.refused_alert": N_("A station refused an alert"),
    "station.rejected_command": N_("A station refused a command"),
    "intrusion.detected": N_("Intrusion detected"),
    "keys.rotate": N_("Changed the signing keys"),
    "enrolment.claim_codes_created": N_("Made station claim codes"),
    "enrolment.requested": N_("A station asked to join"),
    "enrolment.collected": N_("A station collected its settings"),
    "enrolment.approved": N_("Approved a waiting station"),
    "enrolment.refused": N_("Refused a waiting station"),
    "enrolment.rejected": N_("Rejected a waiting station"),
    "live.create": N_("Went on air live"),
    "live.stop": N_("Ended a live broadcast"),
    "release.add": N_("Added a station software release"),
    "rollout.start": N_("Started rolling out a release"),
    "rollout.promote": N_("The trial stations took the release; sending it to the rest"),
    "rollout.stopped": N_("Stopped a rollout"),
    "rollout.failed": N_("A rollout failed: a trial station went back"),
}
"""Every action the server records (``tests/unit/test_audit_words.py`` checks the list)."""

FAMILIES = (
    ("auth.", N_("Signing in")),
    ("audio.", N_("Audio")),
    ("broadcast.", N_("Bulletins")),
    ("programme.", N_("Programmes")),
    ("alert.", N_("Emergency alerts")),
    ("station.", N_("Stations")),
    ("alarm.", N_("Station faults")),
    ("enrolment.", N_("Waiting stations")),
    ("live.", N_("Live broadcasts")),
    ("release.", N_("Station software releases")),
    ("rollout.", N_("Station software rollouts")),
    ("user.", N_("Users")),
    ("denied:", N_("Refused attempts")),
)
"""The audit page's filter: kinds of action by the prefix of their code."""

COMMANDS = {
    "test_tone": N_("Played a test tone on a station"),
    "set_amp": N_("Switched a station's amplifier"),
    "set_volume": N_("Set a station's volume"),
    "restart": N_("Restarted a station"),
    "fetch_log": N_("Fetched a station's log"),
}
OBJECTS = {
    "programme": N_("programme %(id)s"),
    "alert": N_("alert %(id)s"),
    "station": N_("station %(id)s"),
    "user": N_("user %(id)s"),
    "audio": N_("audio %(id)s"),
    "broadcast": N_("bulletin %(id)s"),
    "token": N_("token %(id)s"),
    "alarm": N_("alarm %(id)s"),
    "area": N_("area %(id)s"),
    "enrolment": N_("request %(id)s"),
    "station_group": N_("station group %(id)s"),
    "live": N_("live broadcast %(id)s"),
    "release": N_("release %(id)s"),
    "rollout": N_("rollout %(id)s"),
}
FIELDS = {
    "state": N_("state"),
    "title": N_("title"),
    "name": N_("name"),
    "username": N_("username"),
    "user": N_("user"),
    "filename": N_("file"),
    "duration_ms": N_("length"),
    "priority": N_("priority"),
    "severity": N_("severity"),
    "canned": N_("recorded message"),
    "drill": N_("drill"),
    "start_at": N_("starts"),
    "expires_at": N_("expires"),
    "station_count": N_("stations"),
    "stations": N_("stations"),
    "station_ids": N_("stations"),
    "area_code": N_("area"),
    "area_codes": N_("areas"),
    "area": N_("area"),
    "grants": N_("roles"),
    "grant": N_("role"),
    "service_account": N_("service account"),
    "reason": N_("reason"),
    "count": N_("count"),
    "hints": N_("codes"),
    "claim": N_("code"),
    "hostname": N_("host name"),
    "latitude": N_("latitude"),
    "longitude": N_("longitude"),
    "display_name": N_("display name"),
    "active": N_("active"),
    "release": N_("release"),
    "canaries": N_("trial stations"),
    "canary_minutes": N_("trial minutes"),
    "files": N_("files"),
    "frames": N_("audio frames"),
}
"""The details worth a sentence; the rest stays in the raw record."""
STATES = {
    "draft": N_("Draft: not on the air"),
    "submitted": N_("Waiting for approval"),
    "approved": N_("Approved: on the air"),
    "rejected": N_("Rejected"),
    "archived": N_("Archived"),
    "awaiting_confirmation": N_("Waiting for a second officer"),
    "active": N_("On the air"),
    "finished": N_("Finished"),
    "cancelled": N_("Cancelled"),
    "expired": N_("Expired"),
    "canary": N_("Trying on a few stations"),
    "rolling": N_("Sending to every station"),
    "stopped": N_("Stopped"),
    "failed": N_("Failed"),
}
SEVERITIES = {
    "extreme": N_("Extreme: danger to life"),
    "severe": N_("Severe"),
    "moderate": N_("Moderate"),
    "minor": N_("Minor"),
}


@dataclass(frozen=True)
class AuditWords:
    """One entry as the page shows it."""

    action: str
    obj: str
    details: str
    raw: str
    """the stored before/after, for the folded raw view"""


def _loads(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def action_words(action: str) -> str:
    """``programme.approve`` → "Approved a programme"; ``denied:x`` → "Refused: …"."""
    if action.startswith("denied:"):
        what = action.removeprefix("denied:")
        wanted = gettext(PERMISSIONS[what]) if what in PERMISSIONS else what
        return gettext("Refused: tried to %(what)s without the right") % {"what": wanted}
    if action.startswith("station.command."):
        name = action.removeprefix("station.command.")
        return (
            gettext(COMMANDS[name]) if name in COMMANDS else gettext("Sent a command to a station")
        )
    return gettext(ACTIONS[action]) if action in ACTIONS else action


def object_words(object_type: str, object_id: str) -> str:
    if not object_type:
        return ""
    if object_type in OBJECTS:
        return gettext(OBJECTS[object_type]) % {"id": object_id}
    return f"{object_type} {object_id}"


def _moment(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return local_time(moment)[:-3] if moment.tzinfo is not None else f"{moment:%d/%m/%Y %H:%M}"


def _grant(value: str) -> str:
    role, _, area = value.partition("@")
    label = gettext(ROLE_LABELS[role]) if role in ROLE_LABELS else role
    return f"{label} ({area})" if area else label


def value_words(key: str, value: Any) -> str:
    """One stored value as a reader writes it (local time, yes/no, translated codes)."""
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(value_words(key, v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k} {value_words(k, v)}" for k, v in value.items())
    if key == "duration_ms" and isinstance(value, int):
        return seconds(value)
    text = str(value)
    if key in ("grant", "grants"):
        return _grant(text)
    if key == "state" and text in STATES:
        return gettext(STATES[text])
    if key == "priority" and text in PRIORITY_LABELS:
        return gettext(PRIORITY_LABELS[text])
    if key == "severity" and text in SEVERITIES:
        return gettext(SEVERITIES[text])
    if key == "reason" and text in STATION_REASONS:
        return gettext(STATION_REASONS[text])
    if key == "canned" and text in canned.BY_NAME:
        message = canned.BY_NAME[text]
        return message.title_en if current_language() == "en" else message.title_vi
    if key.endswith("_at") and isinstance(value, str):
        return _moment(text) or text
    return text


def details_words(before: Any, after: Any) -> str:
    """The known facts of a change: ``state: Chờ duyệt → Đã duyệt``, ``title: …``."""
    old = before if isinstance(before, dict) else {}
    new = after if isinstance(after, dict) else {}
    parts = []
    for key in [*new, *(k for k in old if k not in new)]:
        if key not in FIELDS:
            continue
        label = gettext(FIELDS[key])
        if key in old and key in new and old[key] != new[key]:
            parts.append(f"{label}: {value_words(key, old[key])} → {value_words(key, new[key])}")
        elif key in new:
            parts.append(f"{label}: {value_words(key, new[key])}")
        else:
            parts.append(f"{label}: {value_words(key, old[key])} → —")
    if not parts and isinstance(after, str):
        parts.append(after)
    return "; ".join(parts)


def describe(
    action: str, object_type: str, object_id: str, before: str | None, after: str | None
) -> AuditWords:
    raw = " → ".join(text for text in (before, after) if text)
    return AuditWords(
        action=action_words(action),
        obj=object_words(object_type, object_id),
        details=details_words(_loads(before), _loads(after)),
        raw=raw,
    )
