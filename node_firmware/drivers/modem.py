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

import logging
import re
import time
from dataclasses import dataclass

from loaxa_protocol.errors import LoaxaError
from node_firmware.drivers.serial_port import LazySerialPort

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
        self._link = LazySerialPort("modem", port, baudrate, timeout_s, ModemError)

    def read(self) -> ModemReading:
        """Signal and registered operator; raises ``ModemError``."""
        csq = _parse_csq(self._info("AT+CSQ", "+CSQ:"), self.port)
        operator = _parse_cops(self._info("AT+COPS?", "+COPS:"), self.port)
        rssi_dbm = None if csq is None else -113 + 2 * csq
        return ModemReading(rssi_dbm=rssi_dbm, csq=csq, operator=operator)

    def close(self) -> None:
        self._link.close()

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
        with self._link.talking(repr(command)) as port:
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
