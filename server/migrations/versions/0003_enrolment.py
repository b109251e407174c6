"""Zero-touch enrolment: claim codes and station join requests.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 05:21:48.868540
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import server.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claimcode",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hint", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("area_code", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["area_code"],
            ["area.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_hash"),
    )
    with op.batch_alter_table("claimcode", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claimcode_area_code"), ["area_code"], unique=False)

    op.create_table(
        "enrolmentrequest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.Integer(), nullable=False),
        sa.Column("public_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("hostname", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("source_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("requested_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_poll_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("station_id", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("decided_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("decided_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sealed", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["claimcode.id"],
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["station.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("claim_id"),
    )
    with op.batch_alter_table("enrolmentrequest", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrolmentrequest_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("enrolmentrequest", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrolmentrequest_state"))

    op.drop_table("enrolmentrequest")
    with op.batch_alter_table("claimcode", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claimcode_area_code"))

    op.drop_table("claimcode")
