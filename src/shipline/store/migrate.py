"""Alembic, driven from code: bring the store to the current schema, or refuse a newer one.

Opening an up-to-date store costs one query, `SELECT version_num FROM alembic_version`: no
reflection, and Alembic (a third of a second to import) is loaded only when the revision
differs from SCHEMA_HEAD. A test keeps SCHEMA_HEAD equal to the newest migration. A database
without that table is not a store yet: only `create` (`shipline init`, the demo) builds one.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from shipline.errors import StoreError

SCHEMA_HEAD = "0009"
# The PostgreSQL advisory lock held while migrating ("SHIPLINE" in ASCII, a signed 64-bit key).
MIGRATION_LOCK = 0x5348_4950_4C49_4E45


def alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", "shipline.store:migrations")
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The store's schema revision; None when the database has no shipline schema yet."""
    with engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except (OperationalError, ProgrammingError):  # no such table (a store fault is mapped)
            return None


def upgrade(engine: Engine, *, create: bool = False, where: str = "") -> None:
    """Migrate the store to SCHEMA_HEAD when it is behind; `create`: build it from nothing."""
    current = current_revision(engine)
    if current == SCHEMA_HEAD:
        return
    if current is None and not create:
        raise StoreError(
            f"the database at {where or '?'} is not a shipline store (it has no schema version): "
            "run `shipline init` in the project to create the store there, or point --db at "
            "the store"
        )
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
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch mode alters a SQLite table by rebuilding it (copy, drop, rename), and with
            # foreign keys enforced, dropping a table that others reference fails. SQLite's
            # own procedure: keys off outside the transaction, checked before it commits.
            _foreign_keys(conn, on=False)
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    # Racing first starts (several `init`s, workers started at once) would
                    # each run the DDL and all but one die on duplicate keys. One migrates;
                    # the others wait here, then find the store at head and do nothing.
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise StoreError("the schema upgrade would break foreign keys; nothing changed")
        finally:
            if sqlite:
                _foreign_keys(conn, on=True)


def _foreign_keys(conn: Connection, *, on: bool) -> None:
    """SQLite's foreign_keys pragma, straight to the driver: outside any transaction."""
    cursor = conn.connection.cursor()
    cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    cursor.close()
