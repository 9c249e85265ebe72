"""The store's identity (one row with its id), and the indexes of the read commands.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    identity = op.create_table(
        "store_identity",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":  # SQLite keeps UTC without a zone
        now = now.replace(tzinfo=None)
    op.bulk_insert(identity, [{"id": uuid.uuid4().hex, "created_at": now}])


def downgrade() -> None:
    op.drop_table("store_identity")
