"""When a programme fires: RFC 5545 RRULEs evaluated at local time (Asia/Ho_Chi_Minh).

Pure: no database, no hidden clock. A programme's timing is its first local start
(``start``, a wall-clock time in Vietnam), an optional RRULE (``FREQ=WEEKLY;BYDAY=MO``…)
and exceptions (a local datetime skips one occurrence; a date skips every occurrence on
that day). Occurrences are produced in UTC, because plans carry UTC instants.

Vietnam has no daylight saving time, so a local wall time maps to exactly one instant;
the code still goes through ``zoneinfo`` so nothing here assumes a fixed offset.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from dateutil.rrule import rrule as RRule
from dateutil.rrule import rrulestr

from loaxa_protocol.errors import LoaxaError
from server.local_time import LOCAL_TZ

MIN_SPACING = timedelta(minutes=1)
"""Occurrences closer than this are refused: a rule firing every second is a typo."""
SPACING_SAMPLE = 200
"""How many upcoming occurrences are inspected for the spacing check."""
MAX_CLOSE = 60
"""A rule ended by COUNT or UNTIL within this many occurrences may fire closer together
(a drill, a test): only a rule firing that often *forever* is surely a mistake."""


class RecurrenceError(LoaxaError, ValueError):
    """A timing that cannot be scheduled; the message says what and why.

    ``code`` and ``params`` (optional) let the web pages say it in the reader's language.
    """

    def __init__(self, message: str, code: str = "", params: dict[str, object] | None = None):
        super().__init__(message)
        self.code = code
        self.params = params or {}


def to_local(instant: datetime) -> datetime:
    """An aware instant as naive Vietnam wall time (the form RRULEs are evaluated in)."""
    if instant.tzinfo is None:
        raise ValueError("instant must be timezone-aware")
    return instant.astimezone(LOCAL_TZ).replace(tzinfo=None)


def to_utc(local: datetime) -> datetime:
    """Naive Vietnam wall time as an aware UTC instant."""
    if local.tzinfo is not None:
        return local.astimezone(UTC)
    return local.replace(tzinfo=LOCAL_TZ).astimezone(UTC)


def as_local_naive(value: datetime) -> datetime:
    """A start given either as naive local time or with an offset, as naive local time."""
    return to_local(value) if value.tzinfo is not None else value


def fmt_local(instant: datetime) -> str:
    """How an operator reads an instant: ``Mon 2026-12-07 05:00`` in Vietnam time."""
    local = to_local(instant) if instant.tzinfo is not None else instant
    return local.strftime("%a %Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Timing:
    """When a programme fires: a one-off when ``rrule`` is None."""

    start: datetime
    """first occurrence, naive local wall time"""
    rrule: str | None = None
    exceptions: tuple[datetime | date, ...] = field(default_factory=tuple)

    def _rule(self) -> RRule | None:
        if self.rrule is None:
            return None
        return parse_rrule(self.rrule, self.start)

    def _skipped(self, local: datetime) -> bool:
        for exception in self.exceptions:
            if isinstance(exception, datetime):
                if as_local_naive(exception) == local:
                    return True
            elif exception == local.date():
                return True
        return False

    def iter_local(self, after_local: datetime) -> Iterator[datetime]:
        """Occurrences at or after ``after_local`` (naive local), in order, exceptions removed."""
        rule = self._rule()
        if rule is None:
            if self.start >= after_local and not self._skipped(self.start):
                yield self.start
            return
        # One pass from the rule's start (``after`` would restart from it every call).
        for current in rule.xafter(after_local, inc=True):
            if not self._skipped(current):
                yield current

    def between(
        self, start_utc: datetime, end_utc: datetime, limit: int = 10_000
    ) -> list[datetime]:
        """UTC instants of the occurrences with ``start_utc <= t < end_utc`` (at most ``limit``)."""
        found: list[datetime] = []
        end_local = to_local(end_utc)
        for local in self.iter_local(to_local(start_utc)):
            if local >= end_local or len(found) >= limit:
                break
            found.append(to_utc(local))
        return found

    def next_after(self, instant: datetime) -> datetime | None:
        """The first occurrence at or after ``instant`` (UTC), or None if none is left."""
        for local in self.iter_local(to_local(instant)):
            return to_utc(local)
        return None


def parse_rrule(text: str, start_local: datetime) -> RRule:
    """The rule anchored at ``start_local``; a precise :class:`RecurrenceError` otherwise."""
    cleaned = text.strip().removeprefix("RRULE:")
    upper = cleaned.upper()
    if not cleaned:
        raise RecurrenceError("rrule is empty; leave it out for a one-off programme")
    if "DTSTART" in upper or "\n" in cleaned:
        raise RecurrenceError(
            f"rrule {text!r}: give one RRULE line only; the first occurrence is 'start'"
        )
    if "FREQ=" not in upper:
        raise RecurrenceError(f"rrule {text!r}: FREQ is missing (e.g. FREQ=WEEKLY;BYDAY=MO)")
    if "FREQ=SECONDLY" in upper:
        raise RecurrenceError(
            f"rrule {text!r}: FREQ=SECONDLY fires at least once a minute; "
            f"occurrences must be at least {int(MIN_SPACING.total_seconds())} s apart"
        )
    # UNTIL=...Z is UTC; the rule runs in local wall time, so UNTIL is turned into it.
    cleaned = _UTC_UNTIL.sub(_local_until, cleaned)
    try:
        rule = rrulestr(cleaned, dtstart=start_local)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise RecurrenceError(f"rrule {text!r}: {exc}") from exc
    if not isinstance(rule, RRule):  # pragma: no cover - one line never gives a set
        raise RecurrenceError(f"rrule {text!r}: expected a single RRULE")
    return rule


_UTC_UNTIL = re.compile(r"UNTIL=(\d{8}T\d{6})Z", re.IGNORECASE)


def _local_until(match: re.Match[str]) -> str:
    instant = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return f"UNTIL={to_local(instant):%Y%m%dT%H%M%S}"


def validate_timing(timing: Timing, now: datetime) -> datetime:
    """Check that the timing fires, and not absurdly often; returns the next occurrence (UTC).

    Raises :class:`RecurrenceError` naming the rule and the problem: a rule that never
    fires at all, one whose occurrences are all in the past, or one that fires more often
    than once a minute.
    """
    now_local = to_local(now)
    if timing.start.tzinfo is not None:
        raise RecurrenceError("start must be local wall time (Asia/Ho_Chi_Minh) without offset")
    if timing.rrule is None:
        if timing._skipped(timing.start):
            raise RecurrenceError(
                f"the one-off start {fmt_local(timing.start)} is also listed as an exception, "
                "so it never fires",
                code="never_fires",
            )
        if timing.start < now_local:
            raise RecurrenceError(
                f"the one-off start {fmt_local(timing.start)} (local) is in the past "
                f"(now {fmt_local(now_local)})",
                code="start_in_past",
                params={"start": timing.start, "now": now_local},
            )
        return to_utc(timing.start)
    rule = timing._rule()
    assert rule is not None
    if rule.after(timing.start, inc=True) is None:
        raise RecurrenceError(
            f"rrule {timing.rrule!r} starting {fmt_local(timing.start)} never fires: "
            "no date matches all its parts",
            code="never_fires",
        )
    upcoming = list(_take(timing.iter_local(now_local), SPACING_SAMPLE))
    if not upcoming:
        last = rule.before(now_local, inc=True)
        when = f"; its last occurrence was {fmt_local(last)}" if last is not None else ""
        raise RecurrenceError(
            f"rrule {timing.rrule!r} never fires after now ({fmt_local(now_local)} local){when}",
            code="never_fires_again",
            params={"last": last},
        )
    bounded = rule._count is not None or rule._until is not None
    for earlier, later in itertools.pairwise(upcoming):
        if later - earlier < MIN_SPACING and not (bounded and len(upcoming) <= MAX_CLOSE):
            seconds = (later - earlier).total_seconds()
            raise RecurrenceError(
                f"rrule {timing.rrule!r} fires every {seconds:g} s (at {earlier:%H:%M:%S} and "
                f"{later:%H:%M:%S} on {earlier:%Y-%m-%d}); occurrences must be at least "
                f"{int(MIN_SPACING.total_seconds())} s apart unless COUNT or UNTIL ends the "
                f"rule within {MAX_CLOSE} occurrences",
                code="too_often",
                params={"seconds": seconds, "minimum": int(MIN_SPACING.total_seconds())},
            )
    return to_utc(upcoming[0])


def _take(values: Iterable[datetime], count: int) -> Iterator[datetime]:
    for index, value in enumerate(values):
        if index >= count:
            return
        yield value
