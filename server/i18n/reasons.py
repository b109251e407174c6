"""Short codes in words, shared by the pages, the CSV exports and the demo: stations'
reason codes and the permissions a refusal names."""

from __future__ import annotations

from server.i18n import N_, gettext

STATION_REASONS = {
    "late": N_("too late"),
    "busy": N_("busy"),
    "player": N_("player fault"),
    "player_hung": N_("player stuck"),
    "relay": N_("relay fault"),
    "audio_missing": N_("audio missing"),
    "audio_unverified": N_("audio not checked"),
    "already_cancelled": N_("already cancelled"),
    "already_over": N_("already over"),
    "cancelled": N_("cancelled"),
    "expired": N_("expired"),
    "superseded": N_("replaced"),
    "preempted": N_("gave way"),
    "malformed": N_("unreadable message"),
    "unknown_key": N_("unknown signing key"),
    "bad_signature": N_("bad signature"),
    "wrong_purpose": N_("key not allowed for this"),
    "retired_key": N_("retired key"),
    "from_future": N_("dated in the future"),
    "replayed": N_("sent twice"),
    "wrong_station": N_("meant for another station"),
    "alert_received": N_("Alert received"),
    "alert_playing": N_("Alert playing"),
    "alert_finished": N_("Alert finished"),
    "alert_failed": N_("Alert failed"),
    "alert_cancelled": N_("Alert cancelled"),
}
"""Short reason codes stations send with an event (``late``, ``busy``, …)."""


def station_reason(code: str | None) -> str:
    """A station's reason code in the reader's words (an unknown code stays as sent)."""
    if not code:
        return ""
    return gettext(STATION_REASONS[code]) if code in STATION_REASONS else code


PERMISSIONS = {  # server.auth.permissions.Action, as the verb of a sentence
    "area.read": N_("see an area"),
    "station.read": N_("see a station"),
    "station.register": N_("register a station"),
    "station.command": N_("send a command to a station"),
    "alarm.read": N_("see alarms"),
    "alarm.ack": N_("acknowledge an alarm"),
    "audio.read": N_("listen to audio"),
    "audio.upload": N_("upload audio"),
    "broadcast.read": N_("see bulletins"),
    "broadcast.create": N_("schedule a bulletin"),
    "broadcast.create_priority": N_("schedule a priority bulletin"),
    "alert.send": N_("send an alert"),
    "alert.cancel": N_("cancel an alert"),
    "alert.confirm": N_("confirm an alert"),
    "programme.edit": N_("edit a programme"),
    "programme.approve": N_("approve a programme"),
    "user.manage": N_("manage users"),
    "token.manage": N_("manage API tokens"),
    "audit.read": N_("read the audit log"),
    "system.read": N_("see the system state"),
    "keys.manage": N_("manage the signing keys"),
    "live.broadcast": N_("speak live to stations"),
    "station.update": N_("update the stations' software"),
}
"""What a refused person tried to do (``denied:programme.approve``)."""
