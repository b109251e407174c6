"""A player that plays nothing and lets the test decide what happened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path


@dataclass
class FakePlayback:
    """One ``start`` call, with the callbacks the test can fire."""

    item_id: str
    path: Path
    start_at: datetime
    duration_ms: int
    on_started: Callable[[str, datetime], None]
    on_finished: Callable[[str, datetime], None]
    on_failed: Callable[[str, str], None]
    stopped: bool = False


class FakePlayer:
    """Implements ``node_firmware.drivers.player.Player``.

    Callbacks fire only when the test calls ``trigger_started``,
    ``trigger_finished`` or ``trigger_failure`` (synchronously, on the test's
    thread), or at once from ``start`` if ``fail_next()`` was called. Like the real
    players, nothing fires for an item after ``stop``.
    """

    def __init__(self) -> None:
        self.started: list[FakePlayback] = []
        self.stopped: list[str] = []
        self.closed = False
        self.volume_pct = 100
        self._failures: list[str] = []

    def start(
        self,
        item_id: str,
        path: Path,
        start_at: datetime,
        duration_ms: int,
        on_started: Callable[[str, datetime], None],
        on_finished: Callable[[str, datetime], None],
        on_failed: Callable[[str, str], None],
    ) -> None:
        playback = FakePlayback(
            item_id, path, start_at, duration_ms, on_started, on_finished, on_failed
        )
        self.started.append(playback)
        if self._failures:
            on_failed(item_id, self._failures.pop(0))

    def set_volume(self, percent: int) -> None:
        self.volume_pct = percent

    def stop(self, item_id: str) -> None:
        self.stopped.append(item_id)
        for playback in self.started:
            if playback.item_id == item_id:
                playback.stopped = True

    def close(self) -> None:
        self.closed = True

    # ------------------------------------------------------------- hooks
    def fail_next(self, reason: str = "fake playback failure") -> None:
        """The next ``start`` reports ``on_failed(item_id, reason)`` immediately."""
        self._failures.append(reason)

    def playback(self, item_id: str) -> FakePlayback:
        """The latest ``start`` of ``item_id``."""
        for playback in reversed(self.started):
            if playback.item_id == item_id:
                return playback
        raise KeyError(f"{item_id} was never started")

    def trigger_started(self, item_id: str, at: datetime | None = None) -> None:
        playback = self.playback(item_id)
        if not playback.stopped:
            playback.on_started(item_id, at or playback.start_at)

    def trigger_finished(self, item_id: str, at: datetime | None = None) -> None:
        """Default ``at``: the planned start plus the planned duration."""
        playback = self.playback(item_id)
        if not playback.stopped:
            end = playback.start_at + timedelta(milliseconds=playback.duration_ms)
            playback.on_finished(item_id, at or end)

    def trigger_failure(self, item_id: str, reason: str = "fake playback failure") -> None:
        playback = self.playback(item_id)
        if not playback.stopped:
            playback.on_failed(item_id, reason)
