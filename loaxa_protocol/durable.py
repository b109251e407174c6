"""Crash-safe file writes, for the server and the station alike.

Not wire protocol, but this is the one package both sides install, and both write files
that must survive a power cut at any instant: plans, keys, the outbox, cached and stored
audio, backups. The recipe is always the same and easy to get subtly wrong (forgetting
to fsync the directory makes the rename itself volatile), so it lives here once:

1. write a temporary file in the target's own directory (a rename is atomic only
   within one file system), with the final mode from the first byte;
2. flush and fsync it;
3. rename it over the target;
4. fsync the directory, so that the rename is on disk too.

A crash leaves either the old file or the new one, never a mix; a temporary file it
leaves behind has a dot name that no reader mistakes for data.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    """Flush a directory entry, so that a rename into it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file that replaces ``path`` whole when the block ends without error.

    Raises ``OSError`` (disk full, permissions) with nothing changed at ``path``.
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (see :func:`atomic_file`)."""
    with atomic_file(path, mode) as handle:
        handle.write(data)
