"""Work beyond code tickets: the work table, calls and events of other owners, call payloads,
and steps with a priority and a due time.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OWNED = "ticket_id IS NOT NULL OR owner_kind IS NOT NULL"


def upgrade() -> None:
    # Plain ADD COLUMNs, on SQLite too: no copy of the steps table.
    op.add_column(
        "steps", sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False)
    )
    op.add_column("steps", sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))

    for table in ("calls", "events"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("ticket_id", existing_type=sa.Integer(), nullable=True)
            if table == "calls":
                batch_op.alter_column("step_id", existing_type=sa.Integer(), nullable=True)
            batch_op.add_column(sa.Column("owner_kind", sa.String(length=16), nullable=True))
            batch_op.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
            batch_op.create_index(f"ix_{table}_owner", ["owner_kind", "owner_id"], unique=False)
            batch_op.create_check_constraint(f"ck_{table}_owner", OWNED)

    op.create_table(
        "call_payloads",
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["call_id"], ["calls.id"]),
        sa.PrimaryKeyConstraint("call_id"),
    )
    op.create_index("ix_call_payloads_created_at", "call_payloads", ["created_at"], unique=False)

    op.create_table(
        "work",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("owner_kind", sa.String(length=16), nullable=True),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("lease_owner", sa.String(length=80), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_work_runnable", "work", ["status", "kind", "priority", "due_at"], unique=False
    )
    op.create_index("ix_work_owner", "work", ["owner_kind", "owner_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_work_owner", table_name="work")
    op.drop_index("ix_work_runnable", table_name="work")
    op.drop_table("work")
    op.drop_index("ix_call_payloads_created_at", table_name="call_payloads")
    op.drop_table("call_payloads")
    # Rows of other owners have no place in the older schema.
    op.execute(sa.text("DELETE FROM calls WHERE ticket_id IS NULL OR step_id IS NULL"))
    op.execute(sa.text("DELETE FROM events WHERE ticket_id IS NULL"))
    for table in ("events", "calls"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"ck_{table}_owner", type_="check")
            batch_op.drop_index(f"ix_{table}_owner")
            batch_op.drop_column("owner_id")
            batch_op.drop_column("owner_kind")
            if table == "calls":
                batch_op.alter_column("step_id", existing_type=sa.Integer(), nullable=False)
            batch_op.alter_column("ticket_id", existing_type=sa.Integer(), nullable=False)
    op.drop_column("steps", "due_at")
    op.drop_column("steps", "priority")
