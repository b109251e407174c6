"""Rows that tests of database logic need but do not care about."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session, col, select

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


def uploaded_assets(engine: Engine) -> list[AudioAsset]:
    """Audio rows people stored, leaving out the canned alert library seeded at start."""
    with Session(engine) as session:
        return list(session.exec(select(AudioAsset).where(col(AudioAsset.library).is_(None))))


def library_file_names(engine: Engine) -> set[str]:
    """File names (sha256) of the canned library in the audio store."""
    with Session(engine) as session:
        query = select(AudioAsset.sha256).where(col(AudioAsset.library).is_not(None))
        return set(session.exec(query).all())
