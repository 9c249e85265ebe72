"""Open the store: SQLite (WAL, BEGIN IMMEDIATE) by default, PostgreSQL for teams.

Only `shipline init` (and the demo) creates a store: opening refuses a missing or empty one
with a clear error, migrates an older store to the current schema, and refuses one written by
a newer shipline. A store fault (read-only, full, locked, damaged, deleted, a database that
went away) reaches the caller as a `StoreError` that names it and its fix, whatever statement
met it: `transient` ones (a lock, a full disk, a server that went away) are worth a retry.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, delete, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shipline.errors import StoreError
from shipline.store.models import CallPayload, utcnow

BUSY_TIMEOUT_S = 30.0
INIT_HINT = "run `shipline init` in the project to create it"

# SQLite's primary result codes (https://sqlite.org/rescode.html) that are store faults.
SQLITE_PERM, SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 3, 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_AUTH, SQLITE_NOTADB = 11, 13, 14, 23, 26
SQLITE_READONLY_DBMOVED = SQLITE_READONLY | (4 << 8)  # the file was unlinked or renamed
SQLITE_IOERR_SHMSIZE = SQLITE_IOERR | (19 << 8)  # WAL's -shm cannot grow: a full disk


def sqlite_fault(
    code: int, message: str, where: str, path: str, busy_timeout_s: float
) -> StoreError | None:
    """The StoreError for SQLite's (extended) result `code` met on the store `where` (its URL;
    `path`, its file), or None when the store is not at fault (a constraint, a statement)."""
    primary = code & 0xFF
    if primary in (SQLITE_BUSY, SQLITE_LOCKED):
        return StoreError(
            f"the store at {where} is locked by another process ({message}; waited "
            f"{busy_timeout_s:g} s): let it finish or stop it (`fuser {path}` names it), then "
            "try again; [store] busy_timeout_s sets the wait",
            transient=True,
        )
    if primary == SQLITE_FULL or code == SQLITE_IOERR_SHMSIZE:
        return StoreError(
            f"cannot write the store at {where}: the disk that holds it is full ({message}); "
            "free space on it, then try again",
            transient=True,
        )
    if code == SQLITE_READONLY_DBMOVED:
        return gone(where)
    if primary == SQLITE_READONLY:
        return StoreError(
            f"cannot write the store at {where}: it is read-only ({message}); let this user "
            "write the file and its folder (chmod u+w), or move the store to a writable disk"
        )
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return damaged(where, message)
    if primary == SQLITE_CANTOPEN:
        return StoreError(
            f"cannot open the store at {where}: {message}; check that its folder exists and "
            "that this user may read and write it"
        )
    if primary == SQLITE_IOERR:
        return StoreError(
            f"cannot use the store at {where}: the disk failed ({message}); check the disk "
            "(dmesg) and its free space"
        )
    if primary in (SQLITE_PERM, SQLITE_AUTH):
        return StoreError(f"cannot open the store at {where}: access refused ({message})")
    return None


# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
PG_TRANSIENT = ("08", "53", "57P01", "57P02", "57P03")  # connection, resources, shutdown
PG_NO_DATABASE = "3D000"
PG_READ_ONLY = "25006"
PG_DAMAGED = ("XX001", "XX002")


def postgres_fault(sqlstate: str | None, message: str, where: str) -> StoreError | None:
    """The StoreError for a PostgreSQL error (`sqlstate` None: the connection itself failed,
    before the server said why in a code), or None when the store is not at fault."""
    if sqlstate == PG_NO_DATABASE or (
        sqlstate is None and "database" in message and "does not exist" in message
    ):
        return StoreError(
            f"cannot open the store at {where}: its database does not exist ({message}); was "
            "it dropped? Create it and run `shipline init`, or point --db at the right one"
        )
    if sqlstate is not None and sqlstate.startswith("28"):
        return StoreError(f"cannot open the store at {where}: the login was refused ({message})")
    if sqlstate == PG_READ_ONLY:
        return StoreError(
            f"cannot write the store at {where}: it is read-only ({message}); connect to the "
            "primary server"
        )
    if sqlstate in PG_DAMAGED:
        return damaged(where, message)
    if sqlstate is None or sqlstate.startswith(PG_TRANSIENT):
        # psycopg's message says what to check ("Is the server running on that host…?")
        return StoreError(f"cannot open the store at {where}: {message}", transient=True)
    return None


def damaged(where: str, message: str) -> StoreError:
    return StoreError(
        f"cannot open the store at {where}: it is damaged ({message}); restore it from a "
        "backup, or move it away and run `shipline init` for a new one (`shipline doctor` "
        "checks a store)"
    )


def gone(where: str, how: str = "was deleted or moved") -> StoreError:
    return StoreError(
        f"the store at {where} {how} while shipline had it open: stopping, so that no work "
        f"is recorded where nobody will find it; put the store back, or {INIT_HINT} anew"
    )


def normalize_url(url: str, base_dir: Path) -> str:
    """Relative SQLite paths are relative to the project (where shipline.toml lives)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///") :]
        if rel and rel != ":memory:":
            return f"sqlite:///{(base_dir / rel).resolve()}"
    return url


class Store:
    """A connection to the store, with a session factory.

    `read_only`: transactions on SQLite start with a plain (deferred) BEGIN instead of BEGIN
    IMMEDIATE, so a read answers while another process holds the write lock.
    """

    def __init__(
        self,
        url: str,
        base_dir: Path,
        *,
        read_only: bool = False,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.url = normalize_url(url, base_dir)
        try:
            parsed = make_url(self.url)
        except ArgumentError:
            raise StoreError(f"store url {url!r} is not a database URL") from None
        self.dialect = parsed.get_backend_name()
        self.busy_timeout_s = busy_timeout_s
        self.path: Path | None = None  # the SQLite file
        self._file_id: tuple[int, int] | None = None  # its device and inode, once opened
        self._identity: str | None = None  # the store_identity row, once verified
        self._watching = False  # check the file at every transaction (a worker's store)
        self._begin = "BEGIN IMMEDIATE"
        if self.dialect == "sqlite":
            db = parsed.database
            if db and db != ":memory:":
                self.path = Path(db)
            self.engine = create_engine(self.url, connect_args={"timeout": busy_timeout_s})
            if read_only:
                self._begin = "BEGIN"
            self._configure_sqlite()
        elif self.dialect == "postgresql":
            self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=8)
        else:
            raise StoreError(f"store url {url!r}: only sqlite and postgresql are supported")
        event.listen(self.engine, "handle_error", self._handle_error)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _configure_sqlite(self) -> None:
        # pysqlite's own transaction handling defers BEGIN and would upgrade a read lock to a
        # write lock mid-transaction, which fails at once with SQLITE_BUSY under concurrency.
        # Every transaction starts with BEGIN IMMEDIATE instead: the writer lock is taken up
        # front (waiting up to busy_timeout), which is what makes claiming a step atomic.
        busy_ms = round(self.busy_timeout_s * 1000)

        @event.listens_for(self.engine, "connect")
        def _connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(self.engine, "begin")
        def _begin(conn: Any) -> None:
            # Straight to the driver: this runs for every transaction, and going through
            # SQLAlchemy's execution machinery here costs more than the BEGIN itself. For the
            # same reason SQLAlchemy never sees its errors: they are mapped here.
            if self._watching:  # a stat, a few microseconds: no write goes into a lost file
                self.check_file()
            try:
                conn.connection.dbapi_connection.execute(self._begin)
            except sqlite3.Error as exc:
                raise (self.fault(exc) or exc) from exc

    def _handle_error(self, context: ExceptionContext) -> BaseException | None:
        """Every DBAPI error SQLAlchemy meets, on connecting or executing: a store fault
        becomes its StoreError. (A failed pre-ping is left alone: the pool reconnects.)"""
        if context.is_pre_ping:
            return None
        return self.fault(context.original_exception)

    def fault(self, exc: BaseException) -> StoreError | None:
        """The StoreError for a driver's exception, or None when the store is not at fault."""
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None:
                return None
            return sqlite_fault(
                code, str(exc), self.display_url, str(self.path or ""), self.busy_timeout_s
            )
        if self.dialect == "postgresql":
            import psycopg

            if not isinstance(exc, psycopg.Error):
                return None
            sqlstate = exc.sqlstate
            if sqlstate is None and not isinstance(
                exc, psycopg.OperationalError | psycopg.InterfaceError
            ):
                return None
            message = str(exc).strip() or type(exc).__name__
            return postgres_fault(sqlstate, message, self.display_url)
        return None

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

    def require(self) -> None:
        """Refuse a SQLite store that does not exist or is empty: only `init` makes one."""
        if self.path is None:
            return
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise StoreError(f"no store at {self.display_url}: {INIT_HINT}") from None
        except OSError as exc:
            raise StoreError(
                f"cannot open the store at {self.display_url}: {exc.strerror}"
            ) from None
        if size == 0:
            raise StoreError(f"the store at {self.display_url} is an empty file: {INIT_HINT}")

    def migrate(self, *, create: bool = False) -> None:
        """Bring the store to the current schema (`create`: build it in an empty database).
        At the current schema this is one query and nothing is imported."""
        from shipline.store.migrate import SCHEMA_HEAD, current_revision, upgrade

        begin = self._begin
        try:
            self._begin = "BEGIN"  # a read: it does not wait for another process's writer
            if current_revision(self.engine) != SCHEMA_HEAD:
                self._begin = "BEGIN IMMEDIATE"  # a migration writes
                upgrade(self.engine, create=create, where=self.display_url)
        except OperationalError as exc:
            raise StoreError(f"cannot open the store at {self.display_url}: {exc.orig}") from None
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreError(f"cannot open the store at {self.display_url}: {reason}") from None
        finally:
            self._begin = begin
        self._file_id = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise gone(self.display_url) from None
        return st.st_dev, st.st_ino

    def check_file(self) -> None:
        """StoreError unless the SQLite file is the one opened (same device and inode)."""
        file_id = self._stat()
        if self._file_id is None:
            self._file_id = file_id
        elif file_id != self._file_id:
            raise gone(self.display_url, "was replaced by another file")

    def verify(self, conn: Connection) -> None:
        """Still the store this process opened? Its file (device and inode) and its identity
        row must not have changed: a worker that wrote on into a deleted or replaced store
        would report work done that nobody will ever see. Raises StoreError.

        From the first call on, every transaction on a SQLite store checks the file too, so
        a step in flight does not commit into a store deleted under it."""
        self.check_file()
        self._watching = True
        identity = conn.execute(STORE_IDENTITY).scalar()
        if identity is None:
            raise StoreError(f"the store {self.display_url} has lost its identity row: {INIT_HINT}")
        if self._identity is None:
            self._identity = identity
        elif identity != self._identity:
            how = f"became another store (id {identity}, not {self._identity})"
            raise gone(self.display_url, how)

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


STORE_IDENTITY = text("SELECT id FROM store_identity")


def open_store(
    url: str,
    base_dir: Path,
    *,
    create: bool = False,
    read_only: bool = False,
    busy_timeout_s: float = BUSY_TIMEOUT_S,
) -> Store:
    """Open the store at `url`, migrated to the current schema.

    Without `create` a missing, empty or schema-less store is a StoreError that says to run
    `shipline init`; with it (init, the demo) the store is made. `read_only`: see Store.
    """
    store = Store(url, base_dir, read_only=read_only, busy_timeout_s=busy_timeout_s)
    try:
        if create:
            if store.path is not None:
                store.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            store.require()
        store.migrate(create=create)
    except BaseException:
        store.close()
        raise
    return store
