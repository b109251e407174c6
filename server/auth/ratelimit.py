"""Failed sign-ins counted per username and per source address, in a sliding window.

Per username stops a slow guess at one account from many addresses; per address stops
one address spraying many usernames. The price is that anyone can lock a user out for
the window by failing on purpose; an administrator can still sign in from elsewhere or
use an API token, and the audit log shows who did it.

``LoginRateLimiter`` keeps the failures in memory (a restart forgets them, acceptable for
a 15-minute window); the server uses ``DatabaseLoginLimiter``, the same rule over the
``login_failure`` table, so that every replica behind the proxy counts the same
failures and a guesser cannot multiply the limit by the number of replicas.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import Engine, delete
from sqlmodel import Session, col, select

from server.auth.models import LoginFailure
from server.db import utcnow

# Beyond this many tracked keys, expired ones are swept so a spray of random
# usernames cannot grow memory without bound.
SWEEP_ABOVE_KEYS = 10_000


class SignInLimiter(Protocol):
    """What sign-in asks of a limiter, wherever it keeps its counts."""

    def retry_after(self, username: str, ip: str | None) -> float | None: ...

    def record_failure(self, username: str, ip: str | None) -> None: ...

    def record_success(self, username: str) -> None: ...


def _keys(username: str, ip: str | None) -> list[str]:
    keys = [f"user:{username.strip().lower()}"]
    if ip:
        keys.append(f"ip:{ip}")
    return keys


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

    _keys = staticmethod(_keys)

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


SWEEP_EVERY_FAILURES = 100
"""Expired rows are deleted once per this many failures recorded by one replica."""


class DatabaseLoginLimiter:
    """``LoginRateLimiter``'s rule with the failures in the database, shared by replicas."""

    def __init__(
        self,
        engine: Engine,
        max_failures: int = 5,
        window_s: float = 15 * 60,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.max_failures = max_failures
        self.window = timedelta(seconds=window_s)
        self._engine = engine
        self._clock = clock
        self._recorded = 0

    def retry_after(self, username: str, ip: str | None) -> float | None:
        """Seconds until a sign-in may be tried again, or None when it may now."""
        now = self._clock()
        keys = _keys(username, ip)
        with Session(self._engine) as session:
            rows = session.exec(
                select(LoginFailure.key, LoginFailure.at)
                .where(col(LoginFailure.key).in_(keys), LoginFailure.at > now - self.window)
                .order_by(col(LoginFailure.at))
            ).all()
        wait = 0.0
        for key in keys:
            stamps = [at for k, at in rows if k == key]
            if len(stamps) >= self.max_failures:
                until = stamps[-self.max_failures] + self.window
                wait = max(wait, (until - now).total_seconds())
        return wait if wait > 0 else None

    def record_failure(self, username: str, ip: str | None) -> None:
        now = self._clock()
        with Session(self._engine) as session:
            session.add_all(LoginFailure(key=key, at=now) for key in _keys(username, ip))
            self._recorded += 1
            if self._recorded % SWEEP_EVERY_FAILURES == 0:
                expired = col(LoginFailure.at) <= now - self.window
                session.execute(delete(LoginFailure).where(expired))
            session.commit()

    def record_success(self, username: str) -> None:
        """Forget the username's failures; the address's stay (see ``LoginRateLimiter``)."""
        with Session(self._engine) as session:
            key = _keys(username, None)[0]
            session.execute(delete(LoginFailure).where(col(LoginFailure.key) == key))
            session.commit()
