"""What was approved: ``programme.approved_spec``, ``approved_stations``, ``approved_at``
(issue 15).

Approving keeps a copy of the spec and of the stations it reached, so the approval page
can show the next approver what changed since. Existing programmes have no copy: their
page says they were approved before copies were kept.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 08:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import server.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("programme", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approved_spec", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("approved_stations", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("approved_at", server.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("programme", schema=None) as batch_op:
        batch_op.drop_column("approved_at")
        batch_op.drop_column("approved_stations")
        batch_op.drop_column("approved_spec")
