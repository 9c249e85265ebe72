"""The store's schema: migrations match the models, and an older store upgrades in place."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text

from shipline.store.db import open_store
from shipline.store.migrate import SCHEMA_HEAD, alembic_config, current_revision
from shipline.store.models import Base


def test_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    store = open_store("sqlite:///s.db", tmp_path)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    store.close()
    assert diff == []


def test_an_older_store_is_upgraded_in_place_keeping_its_tickets(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tickets (kind, title, body, lane, sensitive, status, route, position,"
                " created_at, updated_at) VALUES ('hotfix', 'kept', '', 2, 0, 'queued', '[]', 0,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    store = open_store("sqlite:///old.db", tmp_path)
    assert current_revision(store.engine) == SCHEMA_HEAD
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT title FROM tickets")).scalars().all() == ["kept"]
    store.close()
