"""The lease: how a worker claims one row of a work table, keeps it, and proves it still has it.

A work table is any table with `id`, `status`, `priority`, `due_at`, `lease_owner`,
`lease_expires_at` and `claims` columns: ticket steps and the `work` table are two. A row is
runnable when it is pending, or claimed under a lease that expired, and due (`due_at` empty
or past), so scheduling needs no scheduler process. The next row is the highest priority,
then the earliest due, then the oldest. Claiming takes it with a fenced token
(`worker#claims`); every later write names that token, so a worker whose lease was taken
over changes no row and gets `LeaseLost` instead of writing twice.

On SQLite the claim runs in the store's BEGIN IMMEDIATE transaction, which holds the write
lock; on PostgreSQL its SELECT locks the row FOR UPDATE SKIP LOCKED, so any number of workers
on any number of machines skip each other's rows. The statements are built once per table
(`Lease`), which keeps the hot path off SQLAlchemy's statement building. `Heartbeat` renews
whatever a worker holds, from a thread, until it is told to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import BindParameter

from shipline.store import models as m
from shipline.store.db import Store

# The two statuses every work table shares: the lease's own.
PENDING = m.WorkStatus.PENDING.value
CLAIMED = m.WorkStatus.CLAIMED.value


class LeaseLost(Exception):
    """Another worker took this row over (our lease expired): drop our result."""


def at(name: str) -> BindParameter[object]:
    """A datetime parameter stored the way the models store it (UTC)."""
    return bindparam(name, type_=m.UTCDateTime())


def lease_token(worker_id: str, claims: int) -> str:
    """The fenced token of a worker's `claims`-th claim of a row."""
    return f"{worker_id}#{claims}"


class Lease:
    """The prebuilt statements that claim, renew and release the rows of one work table.

    Parameters: `now`, `until` (datetimes), `row_id`, `token`. `take_values`: more columns
    the claim sets. `via_owner`: the runnable rows are found through another table (a step
    through its active ticket and position), so the claim must not start from this table's
    status index: SQLite would walk every pending row of every owner to find them.
    """

    def __init__(
        self, table: Table, take_values: Mapping[str, Any] | None = None, via_owner: bool = False
    ) -> None:
        self.table = table
        c = table.c
        now = at("now")
        status = c.status.concat("") if via_owner else c.status  # `|| ''`: no index on it
        # Runnable: free, or held under a lease that expired; and due.
        self.runnable: ColumnElement[bool] = and_(
            or_(status == PENDING, and_(status == CLAIMED, c.lease_expires_at < now)),
            or_(c.due_at.is_(None), c.due_at <= now),
        )
        self.order = (c.priority.desc(), c.due_at.asc().nulls_first())
        self.take: Update = (
            update(table)
            .where(c.id == bindparam("row_id"))
            .values(
                status=CLAIMED,
                lease_owner=bindparam("token"),
                lease_expires_at=at("until"),
                claims=c.claims + 1,
                **dict(take_values or {}),
            )
        )
        self._fenced = and_(c.id == bindparam("row_id"), c.lease_owner == bindparam("token"))
        self.renew_statement: Update = (
            update(table).where(self._fenced).values(lease_expires_at=at("until"))
        )
        self.live: Select[Any] = (
            select(func.count())
            .select_from(table)
            .where(c.status == CLAIMED, c.lease_expires_at >= now)
        )

    def next(
        self,
        columns: Iterable[Any],
        *where: ColumnElement[bool],
        select_from: FromClause | None = None,
        then: Iterable[Any] = (),
    ) -> Select[Any]:
        """SELECT `columns` of the next runnable row that also meets `where`, locked for the
        claim. Ties of priority and due time go to `then` (default: the oldest row)."""
        query = select(*columns)
        if select_from is not None:
            query = query.select_from(select_from)
        tiebreak = list(then) or [self.table.c.id]
        return (
            query.where(self.runnable, *where)
            .order_by(*self.order, *tiebreak)
            .limit(1)
            .with_for_update(skip_locked=True, of=self.table)
        )

    def fenced(self, **values: Any) -> Update:
        """An UPDATE of the row that applies only while `token` still holds it."""
        return update(self.table).where(self._fenced).values(**values)

    def renew(self, conn: Connection, row_id: int, token: str, until: datetime) -> None:
        """Fence: extend our lease to `until`, or raise LeaseLost if the row is no longer ours."""
        result = conn.execute(
            self.renew_statement, {"row_id": row_id, "token": token, "until": until}
        )
        if result.rowcount != 1:
            raise LeaseLost(f"{self.table.name} {row_id} is no longer leased to {token}")


class Held(Protocol):
    """Something a worker holds under a lease: a claimed step, a claimed work item."""

    def renew(self, conn: Connection, until: datetime) -> None:
        """Extend the lease to `until`, or raise LeaseLost."""


class Heartbeat:
    """One thread per worker that renews what the worker holds every `interval` seconds.

    A lost lease (another worker took the row over) is noted and renewing stops; the
    holder's own fenced write then fails with LeaseLost, so nothing is written twice.
    """

    def __init__(self, store: Store, lease_s: float, interval: float) -> None:
        self._store, self._lease_s, self._interval = store, lease_s, interval
        self._held: Held | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def until(self) -> datetime:
        return m.utcnow() + timedelta(seconds=self._lease_s)

    def watch(self, held: Held | None) -> None:
        """Renew `held` from now on (None: nothing is held)."""
        with self._lock:
            self._held = held
        if held is not None and self._thread is None:
            self._thread = threading.Thread(
                target=self._beat, name="shipline-heartbeat", daemon=True
            )
            self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                held = self._held
            if held is None:
                continue
            try:
                with self._store.transaction() as conn:
                    held.renew(conn, self.until())
            except LeaseLost:
                with self._lock:
                    if self._held is held:
                        self._held = None
            except Exception:  # a transient store error: the next beat tries again
                continue

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
