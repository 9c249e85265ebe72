"""The store's tables: tickets, steps (phase runs), attempts, verdicts, calls, events, and
the `work` table for what is not a ticket's step (queue items, scheduled actions, deploys).

Every state change a user can see in `shipline ticket show` lives here. Schema changes go
through Alembic migrations in `shipline/store/migrations/versions/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which keeps no zone) and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class TicketStatus(StrEnum):
    QUEUED = "queued"  # runnable (or waiting on its dependencies)
    RUNNING = "running"  # a step is claimed
    WAITING = "waiting-children"  # an epic whose children are not all done
    NEEDS_HUMAN = "needs-human"
    DONE = "done"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    CLAIMED = "claimed"
    PASSED = "passed"
    APPROVED = "approved"  # accepted by a human as it stands
    FAILED = "failed"  # attempts used up: the ticket is in needs-human
    SKIPPED = "skipped"


class StepOrigin(StrEnum):
    """Why the engine inserted a step the route did not list."""

    CI = "ci"  # implement left CI red
    MERGE = "merge"  # the merge queue found a conflict or a red judge


# The members under their short names, as the rest of the code base spells them.
QUEUED = TicketStatus.QUEUED
RUNNING = TicketStatus.RUNNING
WAITING = TicketStatus.WAITING
NEEDS_HUMAN = TicketStatus.NEEDS_HUMAN
DONE = TicketStatus.DONE
CANCELLED = TicketStatus.CANCELLED
ACTIVE_STATUSES = (QUEUED, RUNNING)
FINAL_STATUSES = (DONE, CANCELLED)

PENDING = StepStatus.PENDING
CLAIMED = StepStatus.CLAIMED
PASSED = StepStatus.PASSED
APPROVED = StepStatus.APPROVED
FAILED = StepStatus.FAILED
SKIPPED = StepStatus.SKIPPED
STEP_DONE = (PASSED, APPROVED, SKIPPED)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    lane: Mapped[int] = mapped_column(Integer, default=2)
    sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(24), default=QUEUED, index=True)
    route: Mapped[list[Any]] = mapped_column(JSON)
    position: Mapped[int] = mapped_column(Integer, default=0)  # index of the current step
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), default=None)
    child_key: Mapped[str | None] = mapped_column(String(80), default=None)
    handoff_reason: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    steps: Mapped[list[Step]] = relationship(
        back_populates="ticket", order_by="Step.position", cascade="all, delete-orphan"
    )

    __table_args__ = (UniqueConstraint("parent_id", "child_key", name="uq_ticket_child_key"),)


class Dependency(Base):
    """`ticket_id` may not start until `depends_on_id` is done."""

    __tablename__ = "dependencies"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    depends_on_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)


class Step(Base):
    """One phase of one ticket's route. Claimed by a worker with a lease."""

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts_allowed: Mapped[int] = mapped_column(Integer)
    attempts_used: Mapped[int] = mapped_column(Integer, default=0)
    deliverable: Mapped[str | None] = mapped_column(Text, default=None)  # the accepted text
    note: Mapped[str | None] = mapped_column(Text, default=None)  # a human's retry note
    # A step the engine inserted (not from the route): why ("ci": implement left CI red;
    # "merge": the merge queue found a conflict or a red judge) and what it was handed.
    origin: Mapped[str | None] = mapped_column(String(16), default=None)
    context: Mapped[str | None] = mapped_column(Text, default=None)
    # The lease (store/lease.py): higher priority first, then the earliest due; a step due
    # later (`due_at` in the future) is not claimed before then.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    lease_owner: Mapped[str | None] = mapped_column(String(80), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    ticket: Mapped[Ticket] = relationship(back_populates="steps")
    attempts: Mapped[list[Attempt]] = relationship(
        back_populates="step", order_by="Attempt.number", cascade="all, delete-orphan"
    )

    __table_args__ = (UniqueConstraint("ticket_id", "position", name="uq_step_position"),)


class Attempt(Base):
    """One run of a phase's producer, committed before it is validated."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    prompt: Mapped[list[Any]] = mapped_column(JSON, default=list)  # the messages it was given
    worker: Mapped[str] = mapped_column(String(80))
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    # The repository context the prompt got (shipline.context.fit record): files shown whole
    # or as outlines, the map's symbols and tokens, what was cut. None: the phase declares none.
    context: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    step: Mapped[Step] = relationship(back_populates="attempts")
    verdict: Mapped[Verdict | None] = relationship(back_populates="attempt", uselist=False)

    __table_args__ = (UniqueConstraint("step_id", "number", name="uq_attempt_number"),)


class Verdict(Base):
    """The result of checking one attempt: deterministic checks, then the validator model."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id"), unique=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    source: Mapped[str] = mapped_column(String(16))  # checks | validator | human | error
    objections: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    attempt: Mapped[Attempt] = relationship(back_populates="verdict")


class Call(Base):
    """Every provider call, successful or not: the bill and the latency live here.

    A call belongs to a ticket's step (`ticket_id`, `step_id`), or to another owner
    (`owner_kind`, `owner_id`: an agent, a queue item, an action, a work item). What it said
    and answered is kept apart, in `call_payloads`, so that the bill's queries stay lean.
    """

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("steps.id"), index=True)
    owner_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    owner_id: Mapped[int | None] = mapped_column(Integer, default=None)
    phase: Mapped[str] = mapped_column(String(32))  # another owner: what the call was for
    role: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(80))
    model: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(40))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float | None] = mapped_column(Float, default=None)  # None: price unknown
    fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # True while the call is in flight: written before it is sent, with its input tokens
    # estimated, and settled with what it really used once it answers. A call whose worker
    # died before that stays an estimate, and the bill and the budgets count it as one.
    estimated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    __table_args__ = (
        CheckConstraint("ticket_id IS NOT NULL OR owner_kind IS NOT NULL", name="ck_calls_owner"),
        Index("ix_calls_owner", "owner_kind", "owner_id"),
    )


class CallPayload(Base):
    """What one call was sent and what it answered, redacted: the material for distillation.

    Written only with `[calls] keep_payloads = true`, and pruned after
    `payload_retention_days` (Store.prune_payloads, run when a worker goes idle).
    """

    __tablename__ = "call_payloads"

    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id"), primary_key=True)
    messages: Mapped[list[Any]] = mapped_column(JSON)  # [{role, content, …}]
    response: Mapped[str | None] = mapped_column(Text, default=None)  # None: the call failed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class Event(Base):
    """A line in a ticket's history (created, claimed, attempt, verdict, handoff, approve…),
    or in another owner's (`owner_kind`, `owner_id`: a work item taken over, retried, failed)."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id"), index=True)
    owner_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    owner_id: Mapped[int | None] = mapped_column(Integer, default=None)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    __table_args__ = (
        CheckConstraint("ticket_id IS NOT NULL OR owner_kind IS NOT NULL", name="ck_events_owner"),
        Index("ix_events_owner", "owner_kind", "owner_id"),
    )


class LockedTest(Base):
    """A test file committed by the tests phase, locked by its content hash.

    implement (and fix-ci) must make the tests pass without changing these files.
    """

    __tablename__ = "test_locks"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(500), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    commit: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class LockedTestId(Base):
    """One test of a locked test file, by its pytest node id: after implement it must be in the
    locked run's JUnit report, passed (judge/proof.py). A locked id without parameters stands
    for all its parametrized cases."""

    __tablename__ = "locked_tests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    path: Mapped[str] = mapped_column(String(500))  # the locked test file
    test_id: Mapped[str] = mapped_column(Text)  # tests/test_x.py::TestC::test_y
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConfigLock(Base):
    """A file of the test configuration (conftest.py, pyproject.toml's [tool.pytest] …),
    locked with the tests by the digest of what in it can deselect tests
    (workspaces/testconfig.py); a path that did not exist is locked as absent."""

    __tablename__ = "test_config_locks"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), primary_key=True)
    path: Mapped[str] = mapped_column(String(500), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class JudgeRun(Base):
    """One run of the judge (or of the tests command) in a ticket's worktree; the full log is
    in the file at `log_path`."""

    __tablename__ = "judge_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), index=True)
    step_id: Mapped[int | None] = mapped_column(ForeignKey("steps.id"), default=None)
    attempt: Mapped[int | None] = mapped_column(Integer, default=None)
    purpose: Mapped[str] = mapped_column(String(16))  # tests | judge | merge
    command: Mapped[str] = mapped_column(Text)
    commit: Mapped[str | None] = mapped_column(String(64), default=None)  # the tree judged
    exit_code: Mapped[int] = mapped_column(Integer)
    timed_out: Mapped[bool] = mapped_column(Boolean, default=False)
    duration_s: Mapped[float] = mapped_column(Float)
    log_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Merge(Base):
    """A ticket's work reaching its target branch: the data for lead time and deploy metrics."""

    __tablename__ = "merges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"), unique=True)
    target: Mapped[str] = mapped_column(String(200))
    commit: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16))  # merge | pr
    url: Mapped[str | None] = mapped_column(String(500), default=None)  # pr mode: the PR
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OwnerKind(StrEnum):
    """Who a call, an event or a work item belongs to when it is not a ticket's step."""

    TICKET = "ticket"  # a work item about a ticket (a deploy, an approval)
    AGENT = "agent"
    QUEUE_ITEM = "queue-item"
    ACTION = "action"
    WORK = "work"  # a row of the work table


class WorkStatus(StrEnum):
    """A work item's status. PENDING and CLAIMED are the lease's own (store/lease.py), shared
    with ticket steps."""

    PENDING = "pending"  # runnable once due
    CLAIMED = "claimed"  # held under a lease
    DONE = "done"
    FAILED = "failed"  # given up: `last_error` says why


class Work(Base):
    """One unit of work that is not a ticket's step: a queue item to act on, a scheduled
    action, a deploy, an approval. Claimed with the same lease as ticket steps, highest
    priority first, never before `due_at`."""

    __tablename__ = "work"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    owner_kind: Mapped[str | None] = mapped_column(String(16), default=None)
    owner_id: Mapped[int | None] = mapped_column(Integer, default=None)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    status: Mapped[str] = mapped_column(String(16), default=WorkStatus.PENDING)
    lease_owner: Mapped[str | None] = mapped_column(String(80), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # tries that reported an outcome
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    __table_args__ = (
        Index("ix_work_runnable", "status", "kind", "priority", "due_at"),
        Index("ix_work_owner", "owner_kind", "owner_id"),
    )


class StoreIdentity(Base):
    """One row, written when the store is made: its id. A worker reads it at each claim, so
    that a store deleted or replaced under it (another file, a database dropped and made
    again) stops the worker instead of taking its work."""

    __tablename__ = "store_identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
