"""Who may do what, where: the role × action table and the subtree rule.

Pure data and functions (no FastAPI, no database): the HTTP layer asks
:func:`allowed` through ``server.auth.deps.authorize``, the tests walk the table
exhaustively, and ``docs/security.md`` carries :func:`role_table_markdown` verbatim,
so the code, the tests and the document cannot disagree.

Theory of operation: a user holds grants, each a role in one area. A grant covers its
area's whole subtree (a province grant covers every commune in it; a commune grant
covers only that commune and its stations). An action on an object is allowed when
one grant whose role includes the action covers the object's area. An object spanning
several areas (a broadcast to many stations) is allowed only when every area is.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable

from loaxa_protocol import Priority
from server.auth.actor import Grant


class Role(enum.StrEnum):
    PROVINCE_ADMIN = "province_admin"
    ALERT_OFFICER = "alert_officer"
    COMMUNE_OPERATOR = "commune_operator"
    APPROVER = "approver"
    TECHNICIAN = "technician"
    VIEWER = "viewer"


class Action(enum.StrEnum):
    AREA_READ = "area.read"
    STATION_READ = "station.read"
    STATION_REGISTER = "station.register"
    STATION_COMMAND = "station.command"
    STATION_UPDATE = "station.update"
    ALARM_READ = "alarm.read"
    ALARM_ACK = "alarm.ack"
    AUDIO_READ = "audio.read"
    AUDIO_UPLOAD = "audio.upload"
    BROADCAST_READ = "broadcast.read"
    BROADCAST_CREATE = "broadcast.create"
    BROADCAST_CREATE_PRIORITY = "broadcast.create_priority"
    ALERT_SEND = "alert.send"
    ALERT_CANCEL = "alert.cancel"
    ALERT_CONFIRM = "alert.confirm"
    LIVE_BROADCAST = "live.broadcast"
    PROGRAMME_EDIT = "programme.edit"
    PROGRAMME_APPROVE = "programme.approve"
    USER_MANAGE = "user.manage"
    TOKEN_MANAGE = "token.manage"
    AUDIT_READ = "audit.read"
    SYSTEM_READ = "system.read"
    KEYS_MANAGE = "keys.manage"


CREATE_ACTION = {
    Priority.LIVE: Action.BROADCAST_CREATE_PRIORITY,
    Priority.PRIORITY: Action.BROADCAST_CREATE_PRIORITY,
    Priority.NORMAL: Action.BROADCAST_CREATE,
    Priority.BACKGROUND: Action.BROADCAST_CREATE,
}
"""The action scheduling at each priority needs: priority and live bulletins speak for the
province; emergencies are alerts (no entry: they go through the alert API)."""


READS = frozenset({Action.AREA_READ, Action.STATION_READ, Action.AUDIO_READ, Action.BROADCAST_READ})
"""What every role may see in its subtree; denials of these are not audited."""

ALERTS = frozenset({Action.ALERT_SEND, Action.ALERT_CANCEL, Action.ALERT_CONFIRM})

ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.PROVINCE_ADMIN: frozenset(Action),
    # Priority and live bulletins are the province authority's voice, not a commune's;
    # the officer records or uploads what they say.
    # Going live is a commune operator's in their own commune (the subtree rule); the
    # province speaks live to wider areas.
    Role.ALERT_OFFICER: READS
    | ALERTS
    | {Action.AUDIO_UPLOAD, Action.BROADCAST_CREATE_PRIORITY, Action.LIVE_BROADCAST},
    Role.COMMUNE_OPERATOR: READS
    | {
        Action.AUDIO_UPLOAD,
        Action.BROADCAST_CREATE,
        Action.PROGRAMME_EDIT,
        Action.LIVE_BROADCAST,
    },
    Role.APPROVER: READS | {Action.PROGRAMME_APPROVE},
    # Alarms are the technician's work list; a viewer (e.g. the district office) may
    # follow them, but only someone who can go and fix the station acknowledges one.
    Role.TECHNICIAN: READS
    | {
        Action.STATION_REGISTER,
        Action.STATION_COMMAND,
        Action.SYSTEM_READ,
        Action.ALARM_READ,
        Action.ALARM_ACK,
    },
    Role.VIEWER: READS | {Action.ALARM_READ},
}

AncestorsOf = Callable[[str], Iterable[str]]
"""``ancestors_of(code)``: the area itself and every area above it."""


def is_read(action: Action) -> bool:
    return action in READS or action in {Action.AUDIT_READ, Action.SYSTEM_READ, Action.ALARM_READ}


def role_allows(role: str, action: Action) -> bool:
    """Whether ``role`` includes ``action`` anywhere; unknown roles allow nothing."""
    try:
        return action in ROLE_ACTIONS[Role(role)]
    except ValueError:
        return False


def allowed(
    grants: Iterable[Grant], action: Action, area_code: str, ancestors_of: AncestorsOf
) -> bool:
    """True when some grant including ``action`` sits on ``area_code`` or above it."""
    covering = {g.area_code for g in grants if role_allows(g.role, action)}
    if not covering:
        return False
    return any(code in covering for code in ancestors_of(area_code))


def first_denied(
    grants: Iterable[Grant], action: Action, area_codes: Iterable[str], ancestors_of: AncestorsOf
) -> str | None:
    """The first area (sorted) where ``action`` is not allowed, or None if all are.

    An empty ``area_codes`` is a bug in the caller (an object without an area must
    never pass by default), so it raises.
    """
    codes = sorted(set(area_codes))
    if not codes:
        raise ValueError(f"{action}: no area to check the permission in")
    grants = tuple(grants)
    for code in codes:
        if not allowed(grants, action, code, ancestors_of):
            return code
    return None


def allowed_somewhere(grants: Iterable[Grant], action: Action) -> bool:
    """True when some grant includes ``action``: for lists filtered to the actor's areas."""
    return any(role_allows(g.role, action) for g in grants)


def scope_roots(grants: Iterable[Grant], action: Action) -> set[str]:
    """The areas whose subtrees ``action`` covers; a list shows what lies below them."""
    return {g.area_code for g in grants if role_allows(g.role, action)}


def role_table_markdown() -> str:
    """The role × action table for ``docs/security.md``, generated from ROLE_ACTIONS."""
    roles = list(Role)
    lines = [
        "| action | " + " | ".join(r.value for r in roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for action in Action:
        marks = ("✔" if action in ROLE_ACTIONS[r] else "·" for r in roles)
        lines.append(f"| `{action.value}` | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"
