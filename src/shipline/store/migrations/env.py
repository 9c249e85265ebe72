"""Alembic environment: runs on the connection shipline hands it (see shipline.store.migrate)."""

from __future__ import annotations

from alembic import context

from shipline.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - shipline always passes a connection
    raise RuntimeError("run migrations through shipline.store.migrate.upgrade")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
