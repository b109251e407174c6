"""Rows that tests of database logic need but do not care about."""

from __future__ import annotations

from server.models import AudioAsset


def minute_of_audio() -> AudioAsset:
    """A one-minute bulletin (id 1 in a fresh database)."""
    return AudioAsset(
        sha256="a" * 64,
        source_sha256="b" * 64,
        size_bytes=1000,
        duration_ms=60_000,
        codec="opus",
        mime_type="audio/ogg",
        original_filename="ban-tin.wav",
        lufs_before=-20.0,
        lufs_after=-16.0,
        true_peak_before_dbtp=-3.0,
        true_peak_after_dbtp=-1.5,
        gain_db=4.0,
        sample_rate=48000,
    )
