"""One alert per CAP message: a unique (cap_sender, cap_identifier) and the `sent` stamp.

A CAP sender retries after a time-out; before this revision a retry of a cancelled
typhoon warning was broadcast again. A database that already holds such a repeat is
refused, naming the messages, instead of being altered: an operator decides which row
is the real alert.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 05:20:53
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEX = "uq_alert_record_cap_message"


def upgrade() -> None:
    repeats = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT cap_sender, cap_identifier, count(*) FROM alert_record "
                "WHERE cap_identifier IS NOT NULL GROUP BY cap_sender, cap_identifier "
                "HAVING count(*) > 1"
            )
        )
        .all()
    )
    if repeats:
        shown = "; ".join(f"{sender} {identifier} ×{n}" for sender, identifier, n in repeats)
        raise RuntimeError(
            f"alert_record repeats CAP messages ({shown}), so the unique index {INDEX} "
            "cannot be created: keep one alert per message, then upgrade again"
        )
    with op.batch_alter_table("alert_record", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cap_sent", server.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(INDEX, ["cap_sender", "cap_identifier"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("alert_record", schema=None) as batch_op:
        batch_op.drop_index(INDEX)
        batch_op.drop_column("cap_sent")
