"""Failed sign-ins counted per username and per source address, in a sliding window.

Per username stops a slow guess at one account from many addresses; per address stops
one address spraying many usernames. The price is that anyone can lock a user out for
the window by failing on purpose; an administrator can still sign in from elsewhere or
use an API token, and the audit log shows who did it. State is in memory, per process:
a restart forgets it, which is acceptable for a 15-minute window.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

# Beyond this many tracked keys, expired ones are swept so a spray of random
# usernames cannot grow memory without bound.
SWEEP_ABOVE_KEYS = 10_000


class LoginRateLimiter:
    def __init__(
        self,
        max_failures: int = 5,
        window_s: float = 15 * 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, ip: str | None) -> list[str]:
        keys = [f"user:{username.strip().lower()}"]
        if ip:
            keys.append(f"ip:{ip}")
        return keys

    def _recent(self, key: str, now: float) -> deque[float]:
        stamps = self._failures.get(key, deque())
        while stamps and stamps[0] <= now - self.window_s:
            stamps.popleft()
        return stamps

    def retry_after(self, username: str, ip: str | None) -> float | None:
        """Seconds until a sign-in may be tried again, or None when it may now."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(username, ip):
                stamps = self._recent(key, now)
                if len(stamps) >= self.max_failures:
                    wait = max(wait, stamps[-self.max_failures] + self.window_s - now)
        return wait if wait > 0 else None

    def record_failure(self, username: str, ip: str | None) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > SWEEP_ABOVE_KEYS:
                self._sweep(now)
            for key in self._keys(username, ip):
                stamps = self._recent(key, now)
                stamps.append(now)
                self._failures[key] = stamps

    def record_success(self, username: str) -> None:
        """Forget the username's failures; the address's stay (one good account must not
        reset a spray from the same address)."""
        with self._lock:
            self._failures.pop(self._keys(username, None)[0], None)

    def _sweep(self, now: float) -> None:
        for key in list(self._failures):
            if not self._recent(key, now):
                del self._failures[key]
