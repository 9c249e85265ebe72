"""Alembic, driven from code: bring the store to the current schema, or refuse a newer one.

Opening an up-to-date store costs one query: Alembic (a third of a second to import) is
loaded only when the revision differs from SCHEMA_HEAD. A test keeps SCHEMA_HEAD equal to
the newest migration.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, inspect, text

from shipline.errors import StoreError

SCHEMA_HEAD = "0004"


def alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "shipline.store:migrations")
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine) -> None:
    current = current_revision(engine)
    if current == SCHEMA_HEAD:
        return
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)
    if current is not None and current not in {rev.revision for rev in script.walk_revisions()}:
        raise StoreError(
            f"the store was written by a newer shipline (schema revision {current}, this "
            f"shipline knows up to {script.get_current_head()}): upgrade shipline, or point "
            "--db elsewhere"
        )
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
