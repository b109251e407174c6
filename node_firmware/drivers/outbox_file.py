"""The outbox's log on the station's disk (format and theory: ``core/outbox.py``).

An event is appended and fsynced before it is handed to MQTT, so a power cut after the
hand-over cannot lose it. Acknowledgements are appended without fsync: losing one only
sends that event again after a reboot (delivery is at least once). The log is
rewritten (temp file, fsync, rename, fsync of the directory) at boot and whenever the
acknowledged records outnumber the pending ones, so it stays the size of what is
still waiting.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from loaxa_protocol.errors import StorageError
from node_firmware.core.outbox import Outbox, OutboxEntry, decode, encode_ack, encode_add
from node_firmware.drivers.disk import fsync_dir

log = logging.getLogger(__name__)

LOG_NAME = "outbox.log"
COMPACT_AFTER = 256
"""Records written since the last rewrite before the log is rewritten (if mostly acked)."""


class OutboxFile:
    """Append-only, checksummed log of the outbox; one writer (the agent's loop)."""

    def __init__(self, dir: Path) -> None:
        dir.mkdir(parents=True, exist_ok=True)
        self.dir = dir
        self.path = dir / LOG_NAME
        self._written = 0

    def load(self) -> Outbox:
        """The outbox as the log left it (torn or corrupt lines skipped), log rewritten."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            log.error("cannot read the outbox %s: %s; starting empty", self.path, exc)
            data = b""
        decoded = decode(data)
        if decoded.skipped:
            log.warning(
                "outbox: skipped %s torn or corrupt record(s) in %s", decoded.skipped, self.path
            )
        if decoded.pending:
            log.info("outbox: %s event(s) from before the restart to send", len(decoded.pending))
        outbox = Outbox(decoded.pending, decoded.next_seq)
        self.rewrite(outbox.pending())
        return outbox

    def added(self, entry: OutboxEntry) -> None:
        """Durably note a new entry; raises ``StorageError`` if the disk refuses."""
        self._append(encode_add(entry), sync=True)

    def acked(self, entry: OutboxEntry, outbox: Outbox) -> None:
        self._append(encode_ack(entry.seq), sync=False)
        if self._written >= COMPACT_AFTER and len(outbox) * 2 < self._written:
            self.rewrite(outbox.pending())

    def rewrite(self, pending: list[OutboxEntry]) -> None:
        temp = self.dir / (LOG_NAME + ".tmp")
        try:
            with temp.open("wb") as f:
                f.write(b"".join(encode_add(e) for e in pending))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
            fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(f"cannot rewrite the outbox {self.path}: {exc}") from exc
        self._written = len(pending)

    def _append(self, record: bytes, *, sync: bool) -> None:
        try:
            with self.path.open("ab") as f:
                f.write(record)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as exc:
            raise StorageError(f"cannot append to the outbox {self.path}: {exc}") from exc
        self._written += 1
