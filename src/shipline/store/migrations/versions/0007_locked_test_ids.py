"""Locked tests, proven: the test ids of each locked test file, and the locked test
configuration (conftest.py, pytest's tables and sections, jest/vitest configs, Go test files).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "locked_tests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("test_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_locked_tests_ticket_id", "locked_tests", ["ticket_id"], unique=False)
    op.create_table(
        "test_config_locks",
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"]),
        sa.PrimaryKeyConstraint("ticket_id", "path"),
    )


def downgrade() -> None:
    op.drop_table("test_config_locks")
    op.drop_index("ix_locked_tests_ticket_id", table_name="locked_tests")
    op.drop_table("locked_tests")
