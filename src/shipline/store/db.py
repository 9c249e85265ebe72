"""Open the store: SQLite (WAL, BEGIN IMMEDIATE) by default, PostgreSQL for teams.

Opening migrates an older database to the current schema and refuses, with a clear error,
a database written by a newer shipline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shipline.errors import StoreError
from shipline.store.models import CallPayload, utcnow

BUSY_TIMEOUT_MS = 30_000


def normalize_url(url: str, base_dir: Path) -> str:
    """Relative SQLite paths are relative to the project (where shipline.toml lives)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///") :]
        if rel and rel != ":memory:":
            return f"sqlite:///{(base_dir / rel).resolve()}"
    return url


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and would upgrade a read lock to a
    # write lock mid-transaction, which fails at once with SQLITE_BUSY under concurrency.
    # Every transaction starts with BEGIN IMMEDIATE instead: the writer lock is taken up
    # front (waiting up to busy_timeout), which is what makes claiming a step atomic.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Straight to the driver: this runs for every transaction, and going through
        # SQLAlchemy's execution machinery here costs more than the BEGIN itself.
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")


class Store:
    """A connection to the store, with a session factory."""

    def __init__(self, url: str, base_dir: Path) -> None:
        self.url = normalize_url(url, base_dir)
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise StoreError(f"store url {url!r} is not a database URL") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
            _configure_sqlite(self.engine)
        elif self.dialect == "postgresql":
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=8)
        else:
            raise StoreError(f"store url {url!r}: only sqlite and postgresql are supported")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A Core transaction, for hot paths that need no ORM: committed on success."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def orm(self, conn: Connection) -> Iterator[Session]:
        """An ORM session inside `conn`'s transaction (it flushes; `conn` commits)."""
        with Session(bind=conn, expire_on_commit=False) as session:
            yield session
            session.flush()

    def migrate(self) -> None:
        from shipline.store.migrate import upgrade

        try:
            upgrade(self.engine)
        except OperationalError as exc:
            raise StoreError(f"cannot open the store at {self.display_url}: {exc.orig}") from None
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"cannot open the store at {self.display_url}: {reason}") from None

    def prune_payloads(self, retention_days: float, now: datetime | None = None) -> int:
        """Delete the call payloads older than `retention_days` ([calls]); returns how many."""
        cutoff = (now or utcnow()) - timedelta(days=retention_days)
        with self.transaction() as conn:
            pruned = conn.execute(delete(CallPayload).where(CallPayload.created_at < cutoff))
            return int(pruned.rowcount)

    @property
    def display_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, base_dir: Path) -> Store:
    store = Store(url, base_dir)
    store.migrate()
    return store
