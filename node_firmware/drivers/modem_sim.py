"""A 4G modem behind a real pseudo-terminal (see ``pty_device``).

The bytes on the wire are a real modem's: commands end in ``\\r``, the command is
echoed while ``ATE1`` is in force, and every answer is framed in ``\\r\\n`` and ends
in ``OK`` or ``ERROR``.
"""

from __future__ import annotations

import logging
import os
import re
import threading

from node_firmware.drivers.pty_device import PtyDevice

log = logging.getLogger(__name__)

_ECHO_COMMAND = re.compile(r"ATE([01])")


class SimulatedModem(PtyDevice):
    """Answers ``AT``, ``ATE0``/``ATE1``, ``AT+CSQ`` and ``AT+COPS?``; else ``ERROR``.

    ``rssi`` is the raw CSQ value (0..31, 99 = unknown); ``operator=None`` means
    not registered, answered as ``+COPS: 0``.
    """

    def __init__(self, rssi: int = 18, operator: str | None = "Viettel", echo: bool = True) -> None:
        self.rssi = rssi
        self.operator = operator
        self.echo = echo
        self.commands: list[str] = []
        self._silent = False
        self._lock = threading.Lock()
        self._injected_replies: list[bytes] = []
        super().__init__("modem", "ttyMODEM")
        self.replug()

    # ------------------------------------------------------------- hooks
    def set_signal(self, rssi: int) -> None:
        """The raw CSQ value the next ``AT+CSQ`` reports (99 = unknown)."""
        self.rssi = rssi

    def set_operator(self, name: str | None) -> None:
        """Register with ``name``, or deregister with ``None``."""
        self.operator = name

    def go_silent(self, silent: bool = True) -> None:
        """Keep reading commands but answer nothing (a hung modem firmware)."""
        self._silent = silent

    def inject_reply(self, raw: bytes) -> None:
        """Answer the next command with ``raw`` bytes instead (no echo either)."""
        with self._lock:
            self._injected_replies.append(raw)

    # ------------------------------------------------------------- modem
    def received(self, master: int, data: bytes) -> None:
        buf = self._buf
        buf += data
        while (end := _line_end(buf)) >= 0:
            line = bytes(buf[:end]).decode("ascii", "replace").strip()
            del buf[: end + 1]
            if line:
                self._reply(master, line)

    def _reply(self, master: int, command: str) -> None:
        self.commands.append(command)
        if self._silent:
            return
        with self._lock:
            injected = self._injected_replies.pop(0) if self._injected_replies else None
        if injected is not None:
            os.write(master, injected)
            return
        echo = f"{command}\r" if self.echo else ""  # echoed before ATE0 takes effect
        lines = self._answer(command)
        os.write(master, (echo + "".join(f"\r\n{line}\r\n" for line in lines)).encode("ascii"))

    def _answer(self, command: str) -> list[str]:
        if command == "AT":
            return ["OK"]
        if match := _ECHO_COMMAND.fullmatch(command):
            self.echo = match.group(1) == "1"
            return ["OK"]
        if command == "AT+CSQ":
            return [f"+CSQ: {self.rssi},99", "OK"]
        if command == "AT+COPS?":
            operator = self.operator
            return [f'+COPS: 0,0,"{operator}",7' if operator else "+COPS: 0", "OK"]
        return ["ERROR"]


def _line_end(buf: bytearray) -> int:
    """Index of the first CR or LF: modems end commands with CR, terminals may send LF."""
    ends = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
    return min(ends) if ends else -1
