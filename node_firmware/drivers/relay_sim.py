"""A relay board that lives behind a real pseudo-terminal.

Tests and the demo drive the *real* relay drivers (pyserial and all) against this
board, so the bytes on the wire are the ones a CH340 LCUS board or our line-protocol
microcontroller would see. A daemon thread reads the pty master and keeps the board's
state and an audit history.

``.port`` is a symlink in a private temp directory pointing at the current pty
slave, the way udev's ``/dev/serial/by-id/...`` names point at ``/dev/ttyUSB0``:
``unplug()`` closes the pty (open handles start failing with EIO) and removes the
link, ``replug()`` creates a fresh pty behind the same name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import tempfile
import threading
import time
import tty
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

FRAME_START = 0xA0
FRAME_LEN = 4
AMP_CURRENT_MA = 850
AMP_TEMP_C = 41.5

BoardProtocol = Literal["ch340", "line"]


def ch340_frame(channel: int, on: bool) -> bytes:
    """The LCUS command frame ``A0 <ch> <state> <sum>`` (shared with the driver)."""
    state = 1 if on else 0
    return bytes([FRAME_START, channel, state, (FRAME_START + channel + state) & 0xFF])


class SimulatedRelayBoard:
    """A CH340 (binary) or line-protocol relay board on a pseudo-terminal."""

    def __init__(self, protocol: BoardProtocol = "ch340") -> None:
        self.protocol: BoardProtocol = protocol
        self.history: list[tuple[float, int, bool]] = []
        self.state: dict[int, bool] = {}
        self.bad_frames = 0
        self._lock = threading.Lock()
        self._current_failed = False
        self._injected_replies: list[str] = []
        self._dir = Path(tempfile.mkdtemp(prefix="loaxa-relay-"))
        self.port = str(self._dir / "ttyRELAY")
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.replug()

    # ------------------------------------------------------------- hooks
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
        """Plug the board back in (a fresh pty behind the same ``.port`` name)."""
        if self._thread is not None:
            return
        master, slave = os.openpty()
        # Raw on both ends of the line discipline: no echo, no CR/LF translation,
        # 0xA0 and friends pass untouched.
        tty.setraw(slave)
        self._master, self._slave = master, slave
        os.symlink(os.ttyname(slave), self.port)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(master,), name="relay-sim", daemon=True
        )
        self._thread.start()

    def fail_current(self, failed: bool = True) -> None:
        """Line mode: report 0 mA even while the amp is on (a blown amp or fuse)."""
        self._current_failed = failed

    def inject_reply(self, reply: str) -> None:
        """Line mode: answer the next command with ``reply`` instead (``""`` = silence)."""
        with self._lock:
            self._injected_replies.append(reply)

    def close(self) -> None:
        self.unplug()
        os.close(self._wake_r)
        os.close(self._wake_w)
        shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------- board
    def _serve(self, master: int) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([master, self._wake_r], [], [])
            if master not in ready:
                continue
            try:
                data = os.read(master, 1024)
            except OSError as exc:  # cannot happen while we hold the slave open
                log.error("simulated relay board stopped reading: %s", exc)
                return
            buf += data
            if self.protocol == "ch340":
                self._parse_frames(buf)
            else:
                self._parse_lines(buf, master)

    def _parse_frames(self, buf: bytearray) -> None:
        while len(buf) >= FRAME_LEN:
            if buf[0] != FRAME_START:
                del buf[0]
                continue
            channel, state = buf[1], buf[2]
            if state in (0, 1) and bytes(buf[:FRAME_LEN]) == ch340_frame(channel, state == 1):
                self._switch(channel, state == 1)
                del buf[:FRAME_LEN]
            else:
                # Resynchronise on the next start byte, as the board's MCU does.
                self.bad_frames += 1
                del buf[0]

    def _parse_lines(self, buf: bytearray, master: int) -> None:
        while b"\n" in buf:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            reply = self._answer(line.decode("ascii", "replace").strip())
            with self._lock:
                if self._injected_replies:
                    reply = self._injected_replies.pop(0)
            if reply:
                os.write(master, reply.encode("ascii"))

    def _answer(self, line: str) -> str:
        words = line.split()
        if (
            len(words) == 3
            and words[0] == "RELAY"
            and words[1].isdigit()
            and words[2]
            in (
                "ON",
                "OFF",
            )
        ):
            self._switch(int(words[1]), words[2] == "ON")
            return "OK\n"
        if line == "STATUS?":
            amp_on = any(self.state.values())
            current = AMP_CURRENT_MA if amp_on and not self._current_failed else 0
            return (
                f"STATUS amp={'on' if amp_on else 'off'} current_ma={current} temp_c={AMP_TEMP_C}\n"
            )
        self.bad_frames += 1
        return f"ERR unknown command {line!r}\n"

    def _switch(self, channel: int, on: bool) -> None:
        with self._lock:
            self.state[channel] = on
            self.history.append((time.time(), channel, on))
        log.debug("simulated relay channel %s -> %s", channel, "on" if on else "off")
