"""A serial device simulated behind a real pseudo-terminal.

Tests and the demo drive the *real* drivers (pyserial and all) against such devices,
so the bytes on the wire are the ones real hardware would see. ``.port`` is a symlink
in a private temp directory pointing at the current pty slave, the way udev's
``/dev/serial/by-id/...`` names point at ``/dev/ttyUSB0``: ``unplug()`` closes the pty
(open handles start failing with EIO) and removes the link, ``replug()`` creates a
fresh pty behind the same name. A daemon thread reads the pty master and hands every
chunk to the device's :meth:`received`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import tempfile
import threading
import tty
from pathlib import Path

log = logging.getLogger(__name__)


class PtyDevice:
    def __init__(self, kind: str, device_name: str) -> None:
        self._kind = kind
        self._dir = Path(tempfile.mkdtemp(prefix=f"loaxa-{kind}-"))
        self.port = str(self._dir / device_name)
        self._master: int | None = None
        self._slave: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf = bytearray()
        """bytes received but not yet understood (a fresh pty starts empty)"""

    def received(self, master: int, data: bytes) -> None:
        """Bytes the driver wrote; answer by writing to ``master``."""
        raise NotImplementedError

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
        """Plug the device back in (a fresh pty behind the same ``.port`` name)."""
        if self._thread is not None:
            return
        master, slave = os.openpty()
        # Raw: no echo, no CR/LF translation, 0xA0 and friends pass untouched; any
        # echo is the device's own business.
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self._buf.clear()
        os.symlink(os.ttyname(slave), self.port)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, args=(master,), name=f"{self._kind}-sim", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self.unplug()
        os.close(self._wake_r)
        os.close(self._wake_w)
        shutil.rmtree(self._dir, ignore_errors=True)

    def _serve(self, master: int) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([master, self._wake_r], [], [])
            if master not in ready:
                continue
            try:
                data = os.read(master, 1024)
            except OSError as exc:  # cannot happen while we hold the slave open
                log.error("simulated %s stopped reading: %s", self._kind, exc)
                return
            self.received(master, data)
