"""Steps the engine inserts (fix-ci after red CI or a failed merge), and a PR's URL.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("context", sa.Text(), nullable=True))
    with op.batch_alter_table("merges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url", sa.String(length=500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("merges", schema=None) as batch_op:
        batch_op.drop_column("url")
    with op.batch_alter_table("steps", schema=None) as batch_op:
        batch_op.drop_column("context")
        batch_op.drop_column("origin")
