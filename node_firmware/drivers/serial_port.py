"""A serial port opened on first use and dropped on any fault, so re-plugging recovers."""

from __future__ import annotations

import contextlib
import logging
import termios
import threading
from collections.abc import Iterator

import serial

from loaxa_protocol.errors import LoaxaError

log = logging.getLogger(__name__)

# termios.error is no OSError: tcflush on a vanished port raises it.
SERIAL_FAULTS = (serial.SerialException, OSError, termios.error)


class LazySerialPort:
    """One lock around a pyserial port; every fault closes it and raises ``error``."""

    def __init__(
        self,
        device: str,
        port: str,
        baudrate: int,
        timeout_s: float,
        error: type[LoaxaError],
    ) -> None:
        self.device = device
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self._error = error
        self._serial: serial.Serial | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def talking(self, what: str) -> Iterator[serial.Serial]:
        """The open port, exclusively; a fault becomes ``error`` naming ``what``."""
        with self._lock:
            try:
                if self._serial is None:
                    self._serial = serial.Serial(
                        self.port,
                        self.baudrate,
                        timeout=self.timeout_s,
                        write_timeout=self.timeout_s,
                    )
                    log.info("%s opened on %s", self.device, self.port)
                yield self._serial
            except SERIAL_FAULTS as exc:
                self._drop()
                raise self._error(f"{self.device} on {self.port}: {what} failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(*SERIAL_FAULTS):
                self._serial.close()
            self._serial = None
