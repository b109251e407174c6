"""The 4G modem's signal and operator, read with AT commands over its serial port.

A dead SIM or a mast out of reach is the commonest reason a station goes quiet
without a local fault, so the heartbeat carries what the modem sees. USB modems
(SIM7600, EC25, ...) expose several ttys; configure the AT one that PPP/QMI does
not hold.

Like the relay drivers, the port is opened lazily and dropped on any serial error,
so re-plugging the modem is all the recovery needed; every failure is a
``ModemError`` that says which command failed on which port.
"""

from __future__ import annotations

import contextlib
import logging
import re
import termios
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import serial

from loaxa_protocol.errors import LoaxaError

log = logging.getLogger(__name__)

_CSQ = re.compile(r"\+CSQ:\s*(\d+)\s*,\s*(\d+)")
# +COPS: <mode>[,<format>,"<operator>"[,<access technology>]]
_COPS = re.compile(r'\+COPS:\s*\d+(?:\s*,\s*\d+\s*,\s*"([^"]*)")?')
_FINAL_ERROR = ("ERROR", "+CME ERROR", "+CMS ERROR")
CSQ_UNKNOWN = 99


class ModemError(LoaxaError):
    """The modem is missing, unplugged, silent, refused a command or answered nonsense."""


@dataclass(frozen=True)
class ModemReading:
    """One look at the radio link; ``None`` where the modem does not know."""

    rssi_dbm: int | None
    csq: int | None
    operator: str | None


class Modem:
    """Asks an AT modem for ``AT+CSQ`` and ``AT+COPS?``; echo on or off."""

    def __init__(self, port: str, baudrate: int = 115200, timeout_s: float = 2.0) -> None:
        self.port = port
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self._serial: serial.Serial | None = None
        self._lock = threading.Lock()

    def read(self) -> ModemReading:
        """Signal and registered operator; raises ``ModemError``."""
        csq = _parse_csq(self._info("AT+CSQ", "+CSQ:"), self.port)
        operator = _parse_cops(self._info("AT+COPS?", "+COPS:"), self.port)
        rssi_dbm = None if csq is None else -113 + 2 * csq
        return ModemReading(rssi_dbm=rssi_dbm, csq=csq, operator=operator)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _info(self, command: str, prefix: str) -> str:
        """The ``prefix`` line of ``command``'s answer, once the modem said ``OK``."""
        lines = self._ask(command)
        for line in lines:
            if line.startswith(prefix):
                return line
        raise ModemError(f"modem on {self.port}: {command!r} answered OK without {prefix} line")

    def _ask(self, command: str) -> list[str]:
        """Send ``command``; the lines before the final ``OK``, echo removed.

        Lines that are neither the echo nor the final result (unsolicited codes such
        as ``RING``, line noise) are kept for the caller to skip.
        """
        with self._talking(command) as port:
            port.reset_input_buffer()  # a late answer to an earlier command is stale
            port.write(f"{command}\r".encode("ascii"))
            port.flush()
            deadline = time.monotonic() + self.timeout_s
            lines: list[str] = []
            while (remaining := deadline - time.monotonic()) > 0:
                port.timeout = remaining
                line = bytes(port.read_until(b"\n")).decode("ascii", "replace").strip()
                if not line or line == command:
                    continue
                if line == "OK":
                    return lines
                if line.startswith(_FINAL_ERROR):
                    raise ModemError(f"modem on {self.port}: {command!r} answered {line!r}")
                lines.append(line)
        heard = f", heard only {lines!r}" if lines else ""
        raise ModemError(
            f"modem on {self.port}: no OK to {command!r} within {self.timeout_s} s{heard}"
        )

    @contextlib.contextmanager
    def _talking(self, command: str) -> Iterator[serial.Serial]:
        with self._lock:
            try:
                if self._serial is None:
                    self._serial = serial.Serial(
                        self.port,
                        self.baudrate,
                        timeout=self.timeout_s,
                        write_timeout=self.timeout_s,
                    )
                    log.info("modem opened on %s", self.port)
                yield self._serial
            # termios.error is no OSError: tcflush on a vanished pty raises it.
            except (serial.SerialException, OSError, termios.error) as exc:
                self._drop()
                raise ModemError(f"modem on {self.port}: {command!r} failed: {exc}") from exc

    def _drop(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError, termios.error):
                self._serial.close()
            self._serial = None


def health_fields(reading: ModemReading | None) -> dict[str, object]:
    """The ``Health`` fields of a reading; ``None`` (no modem or a failed read) blanks them."""
    return {
        "modem_rssi_dbm": reading.rssi_dbm if reading else None,
        "modem_operator": reading.operator if reading else None,
    }


def _parse_csq(line: str, port: str) -> int | None:
    match = _CSQ.match(line)
    if match is None:
        raise ModemError(f"modem on {port}: malformed signal report {line!r}")
    csq = int(match.group(1))
    if csq == CSQ_UNKNOWN:
        return None
    if not 0 <= csq <= 31:
        raise ModemError(f"modem on {port}: signal {csq} outside 0..31 in {line!r}")
    return csq


def _parse_cops(line: str, port: str) -> str | None:
    match = _COPS.match(line)
    if match is None:
        raise ModemError(f"modem on {port}: malformed operator report {line!r}")
    return match.group(1) or None
