"""The signing sequence shared by every replica (one row per sender)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class SigningSequence(SQLModel, table=True):
    """The last sequence number any replica signed with, per sender.

    Stations refuse a plan whose sequence is not above the last one they accepted, so
    two replicas must never draw the same number or go back: each draw is one atomic
    ``UPDATE … RETURNING`` on this row.
    """

    __tablename__ = "signing_sequence"

    name: str = Field(primary_key=True, max_length=32)
    last: int = Field(sa_type=sa.BigInteger, description="last number handed out")
