"""When to try the broker again: exponential back-off with full jitter.

After a broker restart every station in the province notices at the same instant.
If they all retried on the same schedule (one retry a minute, or plain doubling from
the same base) they would hit the returning broker in waves of thousands. With *full
jitter* each wait is drawn uniformly from ``[0, min(cap, base * 2**attempt))``, so the
retries of a fleet are spread evenly over the window, and a station notices a broker
that came back quickly within about a second or two.

The attempt count resets only after a connection has *held* for ``stable_s``: a broker
that accepts and then drops connections (overloaded, restarting in a loop) keeps the
stations backing off instead of hammering it at the base rate.

Pure: the caller passes the random draw in ``[0, 1)`` and the monotonic time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ReconnectBackoff:
    """One station's reconnect schedule; each method returns the next state."""

    base_s: float = 1.0
    cap_s: float = 60.0
    stable_s: float = 30.0
    attempt: int = 0
    """failed or short-lived connections since the last stable one"""
    connected_at_s: float | None = None

    def window_s(self) -> float:
        """The upper bound of the next wait (the wait is uniform below it)."""
        return min(self.cap_s, self.base_s * 2.0**self.attempt)

    def next_wait(self, draw: float) -> tuple[float, ReconnectBackoff]:
        """The wait before the next attempt (``draw`` uniform in ``[0, 1)``), and the state
        after it; call once per lost connection or failed attempt."""
        if not 0.0 <= draw < 1.0:
            raise ValueError(f"draw must be in [0, 1), got {draw}")
        wait = draw * self.window_s()
        return wait, replace(self, attempt=min(self.attempt + 1, 32))

    def connected(self, now_s: float) -> ReconnectBackoff:
        return replace(self, connected_at_s=now_s)

    def disconnected(self, now_s: float) -> ReconnectBackoff:
        """A connection ended: start again from the base if it had been stable."""
        held = self.connected_at_s is not None and now_s - self.connected_at_s >= self.stable_s
        return replace(self, attempt=0 if held else self.attempt, connected_at_s=None)
