"""At most N uploads are decoded and encoded at once; a few more wait; the rest hear
"busy, retry in N s".

Each conversion keeps a core busy (ffmpeg and numpy) for a second or so per minute of
audio. Without a bound, a handful of simultaneous uploads starve the alert path of
CPU; with a queue that never refuses, waiting requests pile up. The gate is a counting
semaphore with a bounded queue, and its refusal says honestly how long to wait: the
typical conversion time (the running mean of recent ones, or the age of the oldest
running one if that is longer) times the requests ahead, per slot.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from loaxa_protocol.errors import AudioError

MAX_WAIT_S = 600.0  # a queued upload gives up after this (each ffmpeg run has its own timeout)
FIRST_GUESS_S = 10.0  # the expected conversion time before any has finished
_SMOOTHING = 0.3  # weight of the newest conversion in the running mean
_RETRY_BOUNDS_S = (1, 600)


class MediaBusy(AudioError):
    """Every conversion slot is taken and the queue is full (or the wait ran out)."""

    code = "media_busy"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"the server is busy converting other audio; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.params = {"seconds": retry_after_s}


class MediaGate:
    """``jobs`` conversions at once, ``queue`` more waiting; thread-safe."""

    def __init__(
        self,
        jobs: int,
        queue: int,
        *,
        max_wait_s: float = MAX_WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if jobs < 1 or queue < 0:
            raise ValueError(f"media gate needs jobs >= 1 and queue >= 0, not {jobs}/{queue}")
        self.jobs = jobs
        self.queue = queue
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._changed = threading.Condition()
        self._started: list[float] = []  # start times of the running conversions
        self.waiting = 0
        self.refused = 0
        self._mean_job_s = FIRST_GUESS_S

    def as_dict(self) -> dict[str, int]:
        """What ``GET /api/v1/system`` shows of the conversions."""
        with self._changed:
            return {
                "jobs": self.jobs,
                "running": self.running,
                "queue": self.queue,
                "waiting": self.waiting,
                "refused": self.refused,
            }

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one conversion slot for the ``with`` block, or raise MediaBusy."""
        with self._changed:
            if self.running >= self.jobs:
                self._wait_in_queue()
            started = self._clock()
            self._started.append(started)
        try:
            yield
        finally:
            took_s = self._clock() - started
            with self._changed:
                self._started.remove(started)
                self._mean_job_s += _SMOOTHING * (took_s - self._mean_job_s)
                self._changed.notify()

    @property
    def running(self) -> int:
        return len(self._started)

    def retry_after_s(self) -> int:
        """Seconds until a new request would likely find room (the Retry-After)."""
        oldest_s = self._clock() - min(self._started) if self._started else 0.0
        ahead = self.waiting + 1
        estimate = math.ceil(max(self._mean_job_s, oldest_s) * ahead / self.jobs)
        low, high = _RETRY_BOUNDS_S
        return min(max(estimate, low), high)

    def _wait_in_queue(self) -> None:
        """Called holding the lock, with every slot taken."""
        if self.waiting >= self.queue:
            self.refused += 1
            raise MediaBusy(self.retry_after_s())
        self.waiting += 1
        deadline = self._clock() + self.max_wait_s
        try:
            while self.running >= self.jobs:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    self.refused += 1
                    raise MediaBusy(self.retry_after_s())
                self._changed.wait(remaining)
        finally:
            self.waiting -= 1
