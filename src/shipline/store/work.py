"""Work that is not a ticket's step: production queue items, scheduled actions, deploys,
approvals. One row of the `work` table each, claimed with the same lease as ticket steps.

    with store.transaction() as conn:
        enqueue(conn, "send", {"to": "ops"}, priority=5, due_at=tomorrow)
    with store.transaction() as conn:
        item = claim_next(conn, worker_id, lease_s=60, kinds=["send"])
    ...  # do the work, with a Heartbeat watching `item`
    with store.transaction() as conn:
        finish(conn, item, {"sent": 1})  # or retry_later / fail / release; LeaseLost if lost

The next item is the highest priority, then the earliest due, then the oldest; an item due
in the future waits, so a schedule needs no scheduler process. Every write after the claim is
fenced by the item's token: a worker whose lease expired and was taken over gets LeaseLost
and changes nothing. Every function runs in the caller's transaction, so a handler's own rows
commit (or not) with the item's outcome.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Text, Update, bindparam, insert, select

from shipline.store import models as m
from shipline.store.lease import CLAIMED, PENDING, Lease, LeaseLost, at, lease_token

W = m.Base.metadata.tables["work"]
E = m.Base.metadata.tables["events"]

WORK_LEASE = Lease(W)
_COLUMNS = (
    W.c.id,
    W.c.kind,
    W.c.owner_kind,
    W.c.owner_id,
    W.c.payload,
    W.c.priority,
    W.c.status,
    W.c.claims,
    W.c.attempts,
)
_NEXT = WORK_LEASE.next(_COLUMNS)
_NEXT_OF_KINDS = WORK_LEASE.next(_COLUMNS, W.c.kind.in_(bindparam("kinds", expanding=True)))
_INSERT = insert(W).returning(W.c.id)
_INSERT_EVENT = insert(E)
_LET_GO = {"lease_owner": None, "lease_expires_at": None}
_FINISH = WORK_LEASE.fenced(
    status=m.WorkStatus.DONE,
    attempts=W.c.attempts + 1,
    result=bindparam("result", type_=W.c.result.type),
    finished_at=at("now"),
    **_LET_GO,
)
_RETRY = WORK_LEASE.fenced(
    status=PENDING,
    attempts=W.c.attempts + 1,
    last_error=bindparam("error", type_=Text()),
    due_at=at("due"),
    **_LET_GO,
)
_FAIL = WORK_LEASE.fenced(
    status=m.WorkStatus.FAILED,
    attempts=W.c.attempts + 1,
    last_error=bindparam("error", type_=Text()),
    finished_at=at("now"),
    **_LET_GO,
)
_RELEASE = WORK_LEASE.fenced(status=PENDING, **_LET_GO)


@dataclass(frozen=True)
class WorkItem:
    """A claimed work item: what its handler needs, and the token that fences its writes."""

    id: int
    kind: str
    payload: dict[str, Any]
    owner_kind: str | None
    owner_id: int | None
    priority: int
    token: str
    claims: int  # this claim included
    attempts: int  # tries that reported an outcome before this one
    resumed: bool  # taken over from a worker whose lease expired

    def renew(self, conn: Connection, until: datetime) -> None:
        """Fence: extend our lease on the item (a Heartbeat calls this), or raise LeaseLost."""
        WORK_LEASE.renew(conn, self.id, self.token, until)


def enqueue(
    conn: Connection,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    priority: int = 0,
    due_at: datetime | None = None,
    owner: tuple[str, int] | None = None,
    now: datetime | None = None,
) -> int:
    """Add a work item (runnable once `due_at` has passed, or at once); returns its id.
    `owner` is (owner kind, id), such as (OwnerKind.QUEUE_ITEM, 7)."""
    owner_kind, owner_id = owner if owner is not None else (None, None)
    new_id = conn.execute(
        _INSERT,
        {
            "kind": kind,
            "owner_kind": owner_kind,
            "owner_id": owner_id,
            "payload": payload or {},
            "priority": priority,
            "due_at": due_at,
            "status": PENDING,
            "claims": 0,
            "attempts": 0,
            "created_at": now or m.utcnow(),
        },
    ).scalar_one()
    return int(new_id)


def claim_next(
    conn: Connection,
    worker_id: str,
    lease_s: float,
    kinds: Iterable[str] | None = None,
    *,
    now: datetime | None = None,
) -> WorkItem | None:
    """Take the next runnable item (of `kinds`, or of any kind) under a lease of `lease_s`
    seconds, or None. Atomic on both backends; an item whose lease expired is taken over."""
    now = now or m.utcnow()
    if kinds is None:
        row = conn.execute(_NEXT, {"now": now}).first()
    else:
        row = conn.execute(_NEXT_OF_KINDS, {"now": now, "kinds": list(kinds)}).first()
    if row is None:
        return None
    claims = row.claims + 1
    token = lease_token(worker_id, claims)
    until = now + timedelta(seconds=lease_s)
    conn.execute(WORK_LEASE.take, {"row_id": row.id, "token": token, "until": until})
    resumed = row.status == CLAIMED
    if resumed:
        taken = f"{row.kind}: taken over by {worker_id} after a lost worker's lease expired"
        _event(conn, row.id, "resumed", taken, now)
    return WorkItem(
        id=row.id,
        kind=row.kind,
        payload=dict(row.payload or {}),
        owner_kind=row.owner_kind,
        owner_id=row.owner_id,
        priority=row.priority,
        token=token,
        claims=claims,
        attempts=row.attempts,
        resumed=resumed,
    )


def finish(
    conn: Connection,
    item: WorkItem,
    result: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> None:
    """The item is done, with what it produced. LeaseLost if it is no longer ours."""
    _fenced(conn, _FINISH, item, result=result, now=now or m.utcnow())


def retry_later(
    conn: Connection,
    item: WorkItem,
    error: str,
    due_at: datetime,
    *,
    now: datetime | None = None,
) -> None:
    """This try failed; run the item again once `due_at` has passed. LeaseLost if lost."""
    _fenced(conn, _RETRY, item, error=error, due=due_at)
    message = f"{item.kind}: try {item.attempts + 1} failed, again at {due_at.isoformat()}: {error}"
    _event(conn, item.id, "retry", message, now or m.utcnow())


def fail(conn: Connection, item: WorkItem, error: str, *, now: datetime | None = None) -> None:
    """Give the item up: it is never claimed again. LeaseLost if it is no longer ours."""
    now = now or m.utcnow()
    _fenced(conn, _FAIL, item, error=error, now=now)
    _event(conn, item.id, "failed", f"{item.kind}: {error}", now)


def release(conn: Connection, item: WorkItem) -> None:
    """Give the item back untried (its worker is stopping): runnable again at once, no try
    counted. LeaseLost if it is no longer ours."""
    _fenced(conn, _RELEASE, item)


def work_item(conn: Connection, item_id: int) -> m.Work | None:
    """One row of the work table as it stands (to read, not to claim)."""
    row = conn.execute(select(W).where(W.c.id == item_id)).first()
    return None if row is None else m.Work(**row._mapping)


def _fenced(conn: Connection, statement: Update, item: WorkItem, **params: Any) -> None:
    result = conn.execute(statement, {"row_id": item.id, "token": item.token, **params})
    if result.rowcount != 1:
        raise LeaseLost(f"work item {item.id} is no longer leased to {item.token}")


def _event(conn: Connection, item_id: int, kind: str, message: str, now: datetime) -> None:
    conn.execute(
        _INSERT_EVENT,
        {
            "owner_kind": m.OwnerKind.WORK,
            "owner_id": item_id,
            "kind": kind,
            "message": message,
            "created_at": now,
        },
    )
