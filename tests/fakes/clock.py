"""A clock that only moves when the test says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2026, 1, 5, 4, 59, 0, tzinfo=UTC)  # 11:59 in Hà Nội, a Monday


class FakeClock:
    """``now()`` returns an aware UTC datetime; ``advance()`` moves it forward."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by a timedelta or a number of seconds; returns the new now."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError("time does not run backwards in tests; build a new FakeClock")
        self._now += step
        return self._now

    def set(self, at: datetime) -> None:
        """Jump to ``at`` (either direction: models an NTP step)."""
        self._now = at.astimezone(UTC)
