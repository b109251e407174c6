"""Time windows and summaries for health history: which hours, which rows, which values.

Raw samples answer "what happened this morning"; after ``health_raw_days`` only the
hourly min / avg / max / count of each metric remain, for a year of trends at a
fraction of the rows. Samples carry the server's receive time, so an hour is complete
as soon as the server's clock has left it (plus ``settle`` for a batch still being
written) and aggregating it once is final.

Pure: no I/O, the clock is an argument; ``server.health.store`` runs these on the
database.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

HOUR = timedelta(hours=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SETTLE = timedelta(seconds=30)
"""How long after an hour ends its last samples may still be on their way to the table."""

K = TypeVar("K", bound=Hashable)


def floor_to(at: datetime, bucket: timedelta) -> datetime:
    """The start of the ``bucket``-long slot (aligned on the Unix epoch) holding ``at``."""
    return at - (at - EPOCH) % bucket


def floor_hour(at: datetime) -> datetime:
    return floor_to(at, HOUR)


@dataclass
class Summary:
    """Running min / max / sum / count of one series in one slot."""

    min: float
    max: float
    total: float
    count: int

    @classmethod
    def of(cls, value: float) -> Summary:
        return cls(value, value, value, 1)

    def add(self, value: float) -> None:
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.total += value
        self.count += 1

    @property
    def avg(self) -> float:
        return self.total / self.count


def summarise(
    points: Iterable[tuple[K, datetime, float]], bucket: timedelta
) -> dict[tuple[K, datetime], Summary]:
    """Group ``(key, at, value)`` by key and ``bucket``-long slot; summarise each group."""
    groups: dict[tuple[K, datetime], Summary] = {}
    for key, at, value in points:
        slot = (key, floor_to(at, bucket))
        found = groups.get(slot)
        if found is None:
            groups[slot] = Summary.of(value)
        else:
            found.add(value)
    return groups


def hours_to_aggregate(
    now: datetime,
    aggregated_until: datetime | None,
    oldest_sample: datetime | None,
    keep_raw: timedelta,
    settle: timedelta = SETTLE,
) -> list[datetime]:
    """Starts of the complete hours not aggregated yet, oldest first.

    ``aggregated_until`` is the end of the last aggregated hour (None: nothing yet);
    hours whose raw samples are already past retention are not worth starting on.
    """
    end = floor_hour(now - settle)
    if aggregated_until is not None:
        start = aggregated_until
    elif oldest_sample is not None:
        start = floor_hour(oldest_sample)
    else:
        return []
    start = max(start, floor_hour(now - keep_raw))
    hours = []
    while start < end:
        hours.append(start)
        start += HOUR
    return hours


@dataclass(frozen=True)
class Cutoffs:
    """Rows strictly older than these instants are deleted."""

    raw_before: datetime
    hourly_before: datetime


def cutoffs(
    now: datetime, keep_raw: timedelta, keep_hourly: timedelta, aggregated_until: datetime | None
) -> Cutoffs:
    """What to prune at ``now``; raw samples of hours not aggregated yet are never pruned."""
    raw_before = now - keep_raw
    if aggregated_until is not None:
        raw_before = min(raw_before, aggregated_until)
    return Cutoffs(raw_before=raw_before, hourly_before=floor_hour(now) - keep_hourly)
