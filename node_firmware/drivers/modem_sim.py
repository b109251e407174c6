"""A 4G modem that lives behind a real pseudo-terminal.

Tests and the demo drive the *real* ``Modem`` driver (pyserial and all) against
this modem, so the bytes on the wire are a real modem's: commands end in ``\\r``,
the command is echoed while ``ATE1`` is in force, and every answer is framed in
``\\r\\n`` and ends in ``OK`` or ``ERROR``.

``.port`` is a symlink in a private temp directory pointing at the current pty
slave, as ``/dev/serial/by-id/...`` points at ``/dev/ttyUSB2``: ``unplug()`` closes
the pty (open handles start failing with EIO) and removes the link, ``replug()``
creates a fresh pty behind the same name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import shutil
import tempfile
import threading
import tty
from pathlib import Path

log = logging.getLogger(__name__)

_ECHO_COMMAND = re.compile(r"ATE([01])")


class SimulatedModem:
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
        self._dir = Path(tempfile.mkdtemp(prefix="loaxa-modem-"))
        self.port = str(self._dir / "ttyMODEM")
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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

    def unplug(self) -> None:
        """Yank the USB cable: open handles fail, the port name disappears."""
        if self._thread is None:
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)
        with contextlib.suppress(BlockingIOError):
            os.read(self._wake_r, 64)

    def replug(self) -> None:
        """Plug the modem back in (a fresh pty behind the same ``.port`` name)."""
        if self._thread is not None:
            return
        master, slave = os.openpty()
        # Raw: the pty itself must neither echo nor translate CR, the modem does that.
        tty.setraw(slave)
        self._master, self._slave = master, slave
        os.symlink(os.ttyname(slave), self.port)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(master,), name="modem-sim", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.unplug()
        os.close(self._wake_r)
        os.close(self._wake_w)
        shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------- modem
    def _serve(self, master: int) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([master, self._wake_r], [], [])
            if master not in ready:
                continue
            try:
                buf += os.read(master, 1024)
            except OSError as exc:  # cannot happen while we hold the slave open
                log.error("simulated modem stopped reading: %s", exc)
                return
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
