"""Disk helpers shared by the drivers that must survive a power cut."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush a directory entry, so that a rename into it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (an hour of audio is ~20 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
