"""Alembic, driven from code: bring the store to the current schema, or refuse a newer one."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from shipline.errors import StoreError


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "shipline.store:migrations")
    return cfg


def upgrade(engine: Engine) -> None:
    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        conn.rollback()
    if current == head:
        return
    if current is not None:
        known = {rev.revision for rev in script.walk_revisions()}
        if current not in known:
            raise StoreError(
                f"the store was written by a newer shipline (schema revision {current}, this "
                f"shipline knows up to {head}): upgrade shipline, or point --db elsewhere"
            )
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
