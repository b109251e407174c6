"""A relay board behind a real pseudo-terminal (see ``pty_device``).

The bytes on the wire are the ones a CH340 LCUS board or our line-protocol
microcontroller would see; the board keeps its state and an audit history.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Literal

from node_firmware.drivers.pty_device import PtyDevice

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


class SimulatedRelayBoard(PtyDevice):
    """A CH340 (binary) or line-protocol relay board on a pseudo-terminal."""

    def __init__(self, protocol: BoardProtocol = "ch340") -> None:
        self.protocol: BoardProtocol = protocol
        self.history: list[tuple[float, int, bool]] = []
        self.state: dict[int, bool] = {}
        self.bad_frames = 0
        self._lock = threading.Lock()
        self._current_failed = False
        self._injected_replies: list[str] = []
        super().__init__("relay", "ttyRELAY")
        self.replug()

    # ------------------------------------------------------------- hooks

    def fail_current(self, failed: bool = True) -> None:
        """Line mode: report 0 mA even while the amp is on (a blown amp or fuse)."""
        self._current_failed = failed

    def inject_reply(self, reply: str) -> None:
        """Line mode: answer the next command with ``reply`` instead (``""`` = silence)."""
        with self._lock:
            self._injected_replies.append(reply)

    # ------------------------------------------------------------- board
    def received(self, master: int, data: bytes) -> None:
        self._buf += data
        if self.protocol == "ch340":
            self._parse_frames(self._buf)
        else:
            self._parse_lines(self._buf, master)

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
