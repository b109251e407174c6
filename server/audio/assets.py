"""The database row of a processed audio file, built one way for uploads and speech."""

from __future__ import annotations

import unicodedata

from server.audio.pipeline import ProcessedAudio
from server.models import AudioAsset


def display_name(filename: str) -> str:
    """The client's file name as a label only: control characters dropped (PostgreSQL
    refuses a NUL in text, and a name is never a path here), at most 255 characters."""
    return "".join(c for c in filename if unicodedata.category(c) != "Cc")[:255]


def asset_for(processed: ProcessedAudio, source_sha256: str, filename: str) -> AudioAsset:
    """A new ``AudioAsset`` for ``processed``; ``source_sha256`` is what repeats are found by
    (the upload's bytes, or the spoken text's cache key)."""
    return AudioAsset(
        sha256=processed.sha256,
        source_sha256=source_sha256,
        size_bytes=processed.size_bytes,
        duration_ms=processed.duration_ms,
        codec=processed.codec,
        mime_type=processed.mime_type,
        original_filename=display_name(filename),
        lufs_before=processed.lufs_before,
        lufs_after=processed.lufs_after,
        true_peak_before_dbtp=processed.true_peak_before_dbtp,
        true_peak_after_dbtp=processed.true_peak_after_dbtp,
        gain_db=processed.gain_db,
        sample_rate=processed.sample_rate,
    )
