"""A relay that remembers every switch and fails on demand."""

from __future__ import annotations

from loaxa_protocol.errors import RelayError


class FakeRelay:
    """Implements ``node_firmware.drivers.relay.Relay``.

    ``history`` lists every successful switch; ``fail_next()`` makes the next
    ``set`` calls raise; ``unplug()`` makes every call raise until ``replug()``.
    """

    def __init__(self) -> None:
        self.history: list[bool] = []
        self.attempts: list[bool] = []
        self.closed = False
        self._failures: list[str] = []
        self._unplugged = False

    @property
    def on(self) -> bool | None:
        """Last state the board accepted, ``None`` before the first switch."""
        return self.history[-1] if self.history else None

    def set(self, on: bool) -> None:
        self.attempts.append(on)
        if self._unplugged:
            raise RelayError("fake relay unplugged")
        if self._failures:
            raise RelayError(self._failures.pop(0))
        self.history.append(on)

    def close(self) -> None:
        self.closed = True

    def fail_next(self, times: int = 1, reason: str = "fake relay failure") -> None:
        self._failures.extend([reason] * times)

    def unplug(self) -> None:
        self._unplugged = True

    def replug(self) -> None:
        self._unplugged = False
