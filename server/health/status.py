"""A station's status as a transition table: what we observed → what it is now.

Theory of operation: the broker's last will (``offline``) and a clean stop (``stopped``)
are the station's own word and apply at once. A heartbeat or an ``online`` status proves
the station runs; it is ``degraded`` instead of ``online`` while a warning-or-worse alarm
about its hardware is active. Silence longer than ``offline_after`` is offline too — the
last will never arrives when the broker itself lost the link quietly. A stopped station
stays stopped through silence: someone stopped it on purpose. A station never heard from
stays ``unknown``.

Pure: no database, the clock is an argument.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime, timedelta

from server.health.rules import AlarmKind, AlarmSeverity
from server.models import StationStatus


class Observation(enum.Enum):
    LINK_ONLINE = "link_online"
    LINK_OFFLINE = "link_offline"
    LINK_STOPPED = "link_stopped"
    HEARTBEAT = "heartbeat"
    SILENT = "silent"
    ALARMS_CHANGED = "alarms_changed"


LIVE = frozenset({StationStatus.ONLINE, StationStatus.DEGRADED})
"""Statuses in which the station is talking to us."""


def next_status(current: StationStatus, observed: Observation, degraded: bool) -> StationStatus:
    """The status after ``observed``; ``degraded`` says whether a hardware alarm is active."""
    running = StationStatus.DEGRADED if degraded else StationStatus.ONLINE
    match observed:
        case Observation.LINK_OFFLINE:
            return StationStatus.OFFLINE
        case Observation.LINK_STOPPED:
            return StationStatus.STOPPED
        case Observation.LINK_ONLINE | Observation.HEARTBEAT:
            return running
        case Observation.SILENT:
            return StationStatus.OFFLINE if current in LIVE else current
        case Observation.ALARMS_CHANGED:
            return running if current in LIVE else current


def is_silent(last_seen_at: datetime | None, now: datetime, offline_after: timedelta) -> bool:
    """Whether a station last heard at ``last_seen_at`` has been quiet for too long."""
    return last_seen_at is not None and now - last_seen_at > offline_after


def degrading(active: Iterable[tuple[str, str]]) -> bool:
    """Whether any active (kind, severity) alarm makes a running station ``degraded``.

    ``offline`` does not: it describes the link, which the status already says.
    """
    return any(
        kind != AlarmKind.OFFLINE and AlarmSeverity(severity).rank >= AlarmSeverity.WARNING.rank
        for kind, severity in active
    )
