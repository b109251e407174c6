"""Which stations a roll-forward must republish: pure, so it is tested to the instant.

A station's plan covers ``[issued_at, horizon_until)``. Any change (a broadcast, a
programme approved, a group changed) republishes the affected stations at once, so
between changes a plan only goes stale in two ways: an item starts entering the window
(its start is at or after the last plan's ``horizon_until`` and before the new one), or
the plan itself ages (a station reconnecting after ``plan_ttl_h`` would refuse the
retained plan; signed URLs expire). Items that *leave* the window at its start are ones
that ended: the station drops those itself, no plan needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Published:
    """What the last plan sent to a station covered."""

    issued_at: datetime
    horizon_until: datetime


@dataclass(frozen=True)
class Starts:
    """Item start instants (sorted) shared by a set of stations: one programme's
    sounding segments at its occurrences, or one broadcast."""

    stations: Iterable[str]
    starts: Sequence[datetime]


def due_stations(
    stations: Iterable[str],
    last: Mapping[str, Published],
    sources: Iterable[Starts],
    until: datetime,
    now: datetime,
    renew_after: timedelta,
) -> set[str]:
    """Stations whose plan must be republished for a window ending at ``until``.

    Due: never published (since this process started), last plan older than
    ``renew_after``, or an item starting in ``[last.horizon_until, until)``.
    """
    due: set[str] = set()
    for station_id in stations:
        published = last.get(station_id)
        if published is None or now - published.issued_at >= renew_after:
            due.add(station_id)
    for source in sources:
        if not source.starts:
            continue
        for station_id in source.stations:
            if station_id in due:
                continue
            published = last.get(station_id)
            if published is None:
                continue  # not a registered station (or already due)
            i = bisect_left(source.starts, published.horizon_until)
            if i < len(source.starts) and source.starts[i] < until:
                due.add(station_id)
    return due


def earliest_horizon(last: Mapping[str, Published], default: datetime) -> datetime:
    """Where to start looking for items entering: the oldest plan's horizon end."""
    return min((p.horizon_until for p in last.values()), default=default)
