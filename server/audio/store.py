"""Content-addressed audio files on disk: ``root/<sha[:2]>/<sha>``.

The sha256 of the bytes is the name, so a file is written once, never changes and
can be verified by anyone holding the hash (plans name audio by hash). Writes go
to a temporary file in the same directory, are fsynced, then renamed into place:
a crash leaves either the whole file or nothing under its final name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from loaxa_protocol.durable import write_atomically
from loaxa_protocol.errors import StorageError

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class AudioStore:
    """A directory of immutable audio blobs named by their sha256."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        """Where ``sha256`` lives. Only 64 lowercase hex digits are accepted: a name
        from a URL can never walk out of the store (``../x``, ``/etc``, ``AB..``)."""
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256):
            raise StorageError(f"not a sha256 (64 lowercase hex digits): {sha256!r:.80}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` and return its sha256; storing the same bytes again is a no-op."""
        sha256 = hashlib.sha256(data).hexdigest()
        final = self.path(sha256)
        if final.exists():
            return sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(final, data)
        return sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        """Size in bytes; StorageError when the file is not stored."""
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise StorageError(f"audio {sha256} is not stored") from exc

    def delete(self, sha256: str) -> bool:
        """Remove the file; returns False when it was not there."""
        try:
            self.path(sha256).unlink()
        except FileNotFoundError:
            return False
        return True
