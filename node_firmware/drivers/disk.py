"""Disk helpers shared by the drivers that must survive a power cut."""

from __future__ import annotations

import hashlib
from pathlib import Path

from loaxa_protocol.durable import fsync_dir

__all__ = ["fsync_dir", "sha256_of"]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (an hour of audio is ~20 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
