"""Calls recorded before they are sent: a call that never settled (its worker died with the
request in flight) keeps an estimate of its input and is flagged as one.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN, on SQLite too: no copy of the calls table. Every earlier call settled.
    op.add_column(
        "calls",
        sa.Column("estimated", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("estimated")
