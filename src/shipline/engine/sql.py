"""Prebuilt Core statements for the worker's per-step path.

A step is claimed, produced and judged in three short transactions. Building statements
once and running them on the session's connection keeps the ORM's flush and lazy loads off
this path: it is what keeps shipline's per-step overhead near a bare commit (see
bench/engine_overhead.py). engine/lifecycle.py runs the transition statements; only an
epic's split, which creates its children, uses the ORM in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Text,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)

from shipline.providers.base import Message
from shipline.redact import redact, redact_obj
from shipline.store import models as m
from shipline.store.lease import Lease
from shipline.store.lease import at as _at

_tables = m.Base.metadata.tables
S = _tables["steps"]
T = _tables["tickets"]
A = _tables["attempts"]
V = _tables["verdicts"]
D = _tables["dependencies"]
C = _tables["calls"]
E = _tables["events"]
L = _tables["test_locks"]
LC = _tables["test_config_locks"]
LI = _tables["locked_tests"]
J = _tables["judge_runs"]
M = _tables["merges"]
P = _tables["call_payloads"]

_blocker = T.alias("blocker")

# Steps are a work table (store/lease.py): claimed by priority, then due time, then ticket,
# when their ticket is active, they are its current step, and its dependencies are done.
STEP_LEASE = Lease(S, {"started_at": func.coalesce(S.c.started_at, _at("now"))}, via_owner=True)

CLAIM = STEP_LEASE.next(
    (
        S.c.id,
        S.c.ticket_id,
        S.c.phase,
        S.c.position,
        S.c.status,
        S.c.claims,
        S.c.note,
        S.c.origin,
        S.c.context,
        S.c.attempts_used,
        S.c.attempts_allowed,
        T.c.kind,
        T.c.title,
        T.c.body,
        T.c.lane,
        T.c.sensitive,
        T.c.route,
        T.c.parent_id,
    ),
    T.c.status.in_([m.QUEUED, m.RUNNING]),
    S.c.position == T.c.position,
    ~exists(
        select(1)
        .select_from(D.join(_blocker, _blocker.c.id == D.c.depends_on_id))
        .where(D.c.ticket_id == T.c.id, _blocker.c.status != m.DONE)
    ),
    select_from=S.join(T, S.c.ticket_id == T.c.id),
    then=(T.c.id,),
)

TAKE_STEP = STEP_LEASE.take  # row_id, token, until, now

# by position: a phase that ran again (after `tests unlock`) has its latest deliverable last
EARLIER_DELIVERABLES = (
    select(S.c.phase, S.c.deliverable)
    .where(
        S.c.ticket_id == bindparam("tid"),
        S.c.position < bindparam("pos"),
        S.c.deliverable.is_not(None),
    )
    .order_by(S.c.position)
)

ATTEMPTS = (
    select(A.c.id, A.c.number, A.c.text, A.c.worker, V.c.passed, V.c.objections)
    .select_from(A.outerjoin(V, V.c.attempt_id == A.c.id))
    .where(A.c.step_id == bindparam("sid"))
    .order_by(A.c.number)
)

# The fence: every write of a claimed step's results goes through a statement that names
# the lease owner; a worker whose lease was taken over changes no row and backs off.
RENEW = STEP_LEASE.renew_statement  # row_id, token, until

_CLOSE = dict(
    status=bindparam("new_status"),
    attempts_used=S.c.attempts_used + bindparam("used"),
    deliverable=func.coalesce(bindparam("accepted", type_=Text()), S.c.deliverable),
    finished_at=_at("finished"),
    lease_owner=None,
    lease_expires_at=None,
)
CLOSE_STEP = (
    update(S)
    .where(S.c.id == bindparam("sid"), S.c.lease_owner == bindparam("token"))
    .values(**_CLOSE)
)

# Ticket and step transitions (engine/lifecycle.py applies them; nothing else writes a status).
SET_STEP = update(S).where(S.c.id == bindparam("sid")).values(**_CLOSE)  # a human's, unfenced
REOPEN_STEP = (
    update(S)
    .where(S.c.id == bindparam("sid"))
    .values(
        status=m.PENDING,
        attempts_allowed=S.c.attempts_used + bindparam("more"),
        note=func.coalesce(bindparam("note", type_=Text()), S.c.note),
        lease_owner=None,
        lease_expires_at=None,
    )
)
SKIP_STEPS = (
    update(S)
    .where(S.c.ticket_id == bindparam("tid"))
    .values(
        status=case((S.c.status.in_([m.PENDING, m.CLAIMED]), m.SKIPPED), else_=S.c.status),
        lease_owner=None,
        lease_expires_at=None,
    )
)
SET_TICKET = (
    update(T)
    .where(T.c.id == bindparam("tid"))
    .values(
        status=bindparam("new_status"),
        position=T.c.position + bindparam("move"),
        handoff_reason=None,
        updated_at=_at("now"),
    )
)
# The one statement that sets a ticket to done.
FINISH_TICKET = (
    update(T)
    .where(T.c.id == bindparam("tid"))
    .values(
        position=T.c.position + bindparam("move"),
        status=m.DONE,
        handoff_reason=None,
        updated_at=_at("now"),
        finished_at=_at("now"),
    )
)
HAND_OFF = (
    update(T)
    .where(T.c.id == bindparam("tid"))
    .values(status=m.NEEDS_HUMAN, handoff_reason=bindparam("reason"), updated_at=_at("now"))
)
CANCEL_TICKET = (  # the handoff reason, if any, stays on record
    update(T)
    .where(T.c.id == bindparam("tid"))
    .values(status=m.CANCELLED, updated_at=_at("now"), finished_at=_at("now"))
)
STEP_POSITION = select(S.c.position).where(S.c.id == bindparam("sid"))
TICKET_STATE = select(T.c.status, T.c.parent_id).where(T.c.id == bindparam("tid"))
TICKET_STATE_POSITION = select(T.c.status, T.c.parent_id, T.c.position).where(
    T.c.id == bindparam("tid")
)
TICKET_STEPS = (
    select(S.c.id, S.c.phase, S.c.origin, S.c.status, S.c.lease_expires_at)
    .where(S.c.ticket_id == bindparam("tid"))
    .order_by(S.c.position)
)
CHILDREN = select(T.c.id, T.c.status).where(T.c.parent_id == bindparam("tid")).order_by(T.c.id)
DEPENDENTS = (  # active tickets that depend on one of `ids`, with that dependency
    select(D.c.ticket_id, D.c.depends_on_id)
    .select_from(D.join(T, T.c.id == D.c.ticket_id))
    .where(
        D.c.depends_on_id.in_(bindparam("ids", expanding=True)), T.c.status.in_(m.ACTIVE_STATUSES)
    )
    .order_by(D.c.ticket_id)
)

INSERT_ATTEMPT = insert(A)
INSERT_STEP = insert(S)
LATER_STEPS = (
    select(S.c.id, S.c.position)
    .where(S.c.ticket_id == bindparam("tid"), S.c.position > bindparam("pos"))
    .order_by(S.c.position.desc())
)
MOVE_STEP = update(S).where(S.c.id == bindparam("sid")).values(position=bindparam("new_pos"))
TICKET_ROUTE = select(T.c.route).where(T.c.id == bindparam("tid"))
SET_ROUTE = update(T).where(T.c.id == bindparam("tid")).values(route=bindparam("route"))
MERGE_FIXES = select(func.count()).where(S.c.ticket_id == bindparam("tid"), S.c.origin == "merge")
INSERT_VERDICT = insert(V)
INSERT_CALLS = insert(C)
# With `[calls] keep_payloads`: the new calls' ids, in the order given, for their payloads.
INSERT_CALLS_RETURNING = insert(C).returning(C.c.id, sort_by_parameter_order=True)
INSERT_CALL_RETURNING = insert(C).returning(C.c.id)  # one call: its id
INSERT_PAYLOADS = insert(P)
INSERT_EVENTS = insert(E)

LIVE_CLAIMS = STEP_LEASE.live

# Code phases under a judge (engine/code.py): all accepted deliverables, the locked tests,
# and the rows their verdicts commit.
ACCEPTED_DELIVERABLES = (
    select(S.c.phase, S.c.deliverable)
    .where(
        S.c.ticket_id == bindparam("tid"),
        S.c.id != bindparam("sid"),
        S.c.deliverable.is_not(None),
    )
    .order_by(S.c.position)
)
LOCKS = select(L.c.path, L.c.sha256).where(L.c.ticket_id == bindparam("tid"))
CONFIG_LOCKS = select(LC.c.path, LC.c.sha256).where(LC.c.ticket_id == bindparam("tid"))
LOCKED_IDS = (
    select(LI.c.path, LI.c.test_id).where(LI.c.ticket_id == bindparam("tid")).order_by(LI.c.id)
)
DELETE_LOCKS = delete(L).where(L.c.ticket_id == bindparam("tid"))
DELETE_CONFIG_LOCKS = delete(LC).where(LC.c.ticket_id == bindparam("tid"))
DELETE_LOCKED_IDS = delete(LI).where(LI.c.ticket_id == bindparam("tid"))
INSERT_LOCKS = insert(L)
INSERT_CONFIG_LOCKS = insert(LC)
INSERT_LOCKED_IDS = insert(LI)
INSERT_JUDGE_RUNS = insert(J)
INSERT_MERGE = insert(M)
KNOWN_PR = select(M.c.url).where(M.c.ticket_id == bindparam("tid"), M.c.url.is_not(None))
# Preflight (engine/preflight.py): has any code step of the ticket had an attempt yet, and a
# green preflight remembered for a base commit (any ticket's).
CODE_ATTEMPTS = (
    select(func.count())
    .select_from(A.join(S, A.c.step_id == S.c.id))
    .where(S.c.ticket_id == bindparam("tid"), S.c.phase.in_(bindparam("phases", expanding=True)))
)
GREEN_PREFLIGHT = (
    select(J.c.ticket_id, J.c.duration_s)
    .where(
        J.c.purpose == "preflight",
        J.c.commit == bindparam("commit"),
        J.c.command == bindparam("command"),
        J.c.exit_code == 0,
        J.c.timed_out.is_(False),
    )
    .order_by(J.c.id.desc())
    .limit(1)
)


def insert_step(
    conn: Connection,
    ticket_id: int,
    after: int,
    phase: str,
    *,
    attempts_allowed: int,
    origin: m.StepOrigin,
    context: str,
) -> None:
    """Insert a step the route did not list right after position `after` (fix-ci after red
    CI or a failed merge); the later steps move down one, the ticket's route says so too."""
    for sid, position in conn.execute(LATER_STEPS, {"tid": ticket_id, "pos": after}).all():
        # highest first: (ticket_id, position) is unique and checked row by row
        conn.execute(MOVE_STEP, {"sid": sid, "new_pos": position + 1})
    conn.execute(
        INSERT_STEP,
        {
            "ticket_id": ticket_id,
            "position": after + 1,
            "phase": phase,
            "status": m.PENDING,
            "attempts_allowed": attempts_allowed,
            "attempts_used": 0,
            "claims": 0,
            "origin": origin,
            "context": context,
        },
    )
    route = list(conn.execute(TICKET_ROUTE, {"tid": ticket_id}).scalar_one())
    route.insert(after + 1, phase)
    conn.execute(SET_ROUTE, {"tid": ticket_id, "route": route})


def append_steps(
    conn: Connection,
    ticket_id: int,
    phases: Sequence[str],
    attempts_allowed: Sequence[int],
    note: str | None,
) -> None:
    """Append route steps after a ticket's last one (the first with `note`); the ticket's
    route says so too. The caller moves the ticket's position onto the first."""
    route = list(conn.execute(TICKET_ROUTE, {"tid": ticket_id}).scalar_one())
    count = int(
        conn.execute(
            select(func.count()).select_from(S).where(S.c.ticket_id == ticket_id)
        ).scalar_one()
    )
    conn.execute(
        INSERT_STEP,
        [
            {
                "ticket_id": ticket_id,
                "position": count + i,
                "phase": phase,
                "status": m.PENDING,
                "attempts_allowed": allowed,
                "attempts_used": 0,
                "claims": 0,
                "note": note if i == 0 else None,
                "origin": None,
                "context": None,
            }
            for i, (phase, allowed) in enumerate(zip(phases, attempts_allowed, strict=True))
        ],
    )
    conn.execute(SET_ROUTE, {"tid": ticket_id, "route": route + list(phases)})


# The key of a call row (see AttemptRunner._recorder) that holds its payload, if kept. It is
# no column of `calls`: insert_calls writes it to `call_payloads`.
PAYLOAD = "payload"


def call_payload(messages: Sequence[Message], response: str | None) -> dict[str, Any]:
    """A call's prompt and answer as `call_payloads` keeps them: redacted, plain JSON."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        turn: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            turn["tool_calls"] = [
                {"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls
            ]
        if message.tool_call_id:
            turn["tool_call_id"] = message.tool_call_id
        turns.append(turn)
    return {
        "messages": redact_obj(turns),
        "response": None if response is None else redact(response),
    }


# The key of a call row that settles a call recorded as started (`start_call`): its id. The
# row then updates that call with what it really used, instead of inserting one.
CALL_ID = "call_id"
# What settling a started call writes; the rest (owner, phase, provider, time) it had already.
SETTLED = ("model", "input_tokens", "output_tokens", "cached_tokens", "latency_ms", "cost", "error")
SETTLE_CALLS = update(C).where(C.c.id == bindparam(CALL_ID))


def start_call(conn: Connection, call: dict[str, Any]) -> int:
    """Write a call about to be sent (`estimated`: its input tokens and cost guessed); its id."""
    row = {k: v for k, v in call.items() if k != PAYLOAD}
    return int(conn.execute(INSERT_CALL_RETURNING, {**row, "estimated": True}).scalar_one())


def insert_calls(conn: Connection, calls: list[dict[str, Any]]) -> None:
    """Write call rows: settle the started ones (under CALL_ID), insert the others; the
    payloads some of them carry (under PAYLOAD) go to call_payloads."""
    settle = [call for call in calls if CALL_ID in call]
    if settle:
        conn.execute(
            SETTLE_CALLS,
            [
                {CALL_ID: call[CALL_ID], "estimated": False, **{k: call[k] for k in SETTLED}}
                for call in settle
            ],
        )
    fresh = [call for call in calls if CALL_ID not in call]
    ids: list[int] = []
    if fresh and any(PAYLOAD in call for call in fresh):
        rows = [{k: v for k, v in call.items() if k != PAYLOAD} for call in fresh]
        ids = list(conn.execute(INSERT_CALLS_RETURNING, rows).scalars().all())
    elif fresh:
        conn.execute(INSERT_CALLS, fresh)
    owned = [(call[CALL_ID], call) for call in settle] + list(zip(ids, fresh, strict=False))
    payloads = [
        {"call_id": call_id, "created_at": call["created_at"], **call[PAYLOAD]}
        for call_id, call in owned
        if PAYLOAD in call
    ]
    if payloads:
        conn.execute(INSERT_PAYLOADS, payloads)


def add_events(
    conn: Connection, ticket_id: int, events: Iterable[tuple[str, str]], now: datetime
) -> None:
    """Lines of a ticket's history (kind, message), written in the caller's transaction."""
    rows = [
        {"ticket_id": ticket_id, "kind": kind, "message": message, "created_at": now}
        for kind, message in events
    ]
    if rows:
        conn.execute(INSERT_EVENTS, rows)
