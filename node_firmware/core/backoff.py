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

The one other reset: the station's own network came back (a link up, an address, a
route; :mod:`node_firmware.core.network`). The wait drawn while it was cut off is then
stale, so the next attempt comes within ``quick_s`` (full jitter again, but over a few
seconds: a tower's worth of stations whose link returns together still spread out), and
a further failure backs off from the base.

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
    quick_s: float = 3.0
    """the jitter window of the attempt after the station's network came back"""
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

    def network_returned(self, draw: float) -> tuple[float, ReconnectBackoff]:
        """The wait before the next attempt now that the station's network is back, and
        the state after it: the back-off starts over from the base."""
        if not 0.0 <= draw < 1.0:
            raise ValueError(f"draw must be in [0, 1), got {draw}")
        return draw * self.quick_s, replace(self, attempt=0)

    def connected(self, now_s: float) -> ReconnectBackoff:
        return replace(self, connected_at_s=now_s)

    def disconnected(self, now_s: float) -> ReconnectBackoff:
        """A connection ended: start again from the base if it had been stable."""
        held = self.connected_at_s is not None and now_s - self.connected_at_s >= self.stable_s
        return replace(self, attempt=0 if held else self.attempt, connected_at_s=None)
