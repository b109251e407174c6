"""The text-to-speech cache: which stored audio speaks which text with which voice."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.db import UTCDateTime, utcnow


class SpokenText(SQLModel, table=True):
    """One rendering: the key is sha256(engine identity, voice, normalised text).

    A table of its own rather than a column on the asset: two keys may yield the same
    bytes (an engine upgrade that changed nothing audible), and both must then hit.
    """

    key: str = Field(primary_key=True, max_length=64)
    audio_id: int = Field(foreign_key="audioasset.id", index=True)
    engine: str = Field(max_length=200, description="engine identity, version and voice")
    voice: str = Field(max_length=100)
    text: str = Field(sa_type=sa.Text, description="the normalised text that was spoken")
    created_at: datetime = Field(sa_type=UTCDateTime, default_factory=utcnow)
