"""Live sessions from a microphone: ``livesession`` (issue 16).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 08:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import server.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "livesession",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("title", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=True),
        sa.Column("station_ids", sa.JSON(), nullable=True),
        sa.Column("started_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ends_by", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ended_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("audio_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["audio_id"], ["audioasset.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("livesession", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_livesession_ended_at"), ["ended_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_livesession_started_at"), ["started_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("livesession", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_livesession_started_at"))
        batch_op.drop_index(batch_op.f("ix_livesession_ended_at"))
    op.drop_table("livesession")
