"""Programmes residents may hear again: ``programme.public`` (issue 15).

Once aired, an approved programme's audio is listed on the commune's public page and
podcast feed unless an operator hides it. Existing programmes become public, as new
ones are: the operator hides the few that should not be replayed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 05:46:03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A literal default ('1' is true to SQLite and PostgreSQL alike) lets SQLite add the
    # column in place; an expression would make the batch copy the whole table.
    with op.batch_alter_table("programme", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public", sa.Boolean(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("programme", schema=None) as batch_op:
        batch_op.drop_column("public")
