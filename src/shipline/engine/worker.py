"""Workers: claim the next runnable step with a lease, keep it alive with a heartbeat, run it.

There is no conductor. On SQLite a claim is one BEGIN IMMEDIATE transaction; on PostgreSQL
it is SELECT … FOR UPDATE SKIP LOCKED, so any number of workers on any number of machines
share one queue. A worker that dies stops heartbeating; its lease expires and any worker
takes the step over from the last committed attempt or verdict.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from shipline.engine.loop import AttemptRunner, Claim, LeaseLost, OnEvent, renew_lease
from shipline.engine.tickets import event
from shipline.store import models as m
from shipline.store.db import Store


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def claim_next(store: Store, worker_id: str, lease_s: float) -> Claim | None:
    """Claim the oldest runnable step, or None. Atomic on SQLite and PostgreSQL."""
    now = m.utcnow()
    blocker = aliased(m.Ticket)
    blocked = exists(
        select(1)
        .select_from(m.Dependency)
        .join(blocker, blocker.id == m.Dependency.depends_on_id)
        .where(m.Dependency.ticket_id == m.Ticket.id, blocker.status != m.DONE)
    )
    query = (
        select(m.Step)
        .join(m.Ticket, m.Step.ticket_id == m.Ticket.id)
        .where(
            m.Ticket.status.in_(m.ACTIVE_STATUSES),
            m.Step.position == m.Ticket.position,
            or_(
                m.Step.status == m.PENDING,
                and_(m.Step.status == m.CLAIMED, m.Step.lease_expires_at < now),
            ),
            ~blocked,
        )
        .order_by(m.Ticket.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=m.Step)
    )
    with store.session() as session:
        step = session.scalars(query).first()
        if step is None:
            return None
        resumed = step.status == m.CLAIMED
        step.claims += 1
        token = f"{worker_id}#{step.claims}"
        step.status = m.CLAIMED
        step.lease_owner = token
        step.lease_expires_at = now + timedelta(seconds=lease_s)
        step.started_at = step.started_at or now
        ticket = step.ticket
        ticket.status = m.RUNNING
        ticket.updated_at = now
        if resumed:
            event(
                session,
                ticket.id,
                "resumed",
                f"{step.phase}: taken over by {worker_id} after a lost worker's lease expired",
            )
        elif step.claims == 1:
            event(session, ticket.id, "started", f"{step.phase}: started by {worker_id}")
        return Claim(step.id, ticket.id, step.phase, token, resumed)


def live_claims(store: Store) -> int:
    """Steps held under an unexpired lease (someone is working on them)."""
    with store.session() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(m.Step)
                .where(m.Step.status == m.CLAIMED, m.Step.lease_expires_at >= m.utcnow())
            )
            or 0
        )


class Heartbeat:
    """Renews a claim's lease every `interval` seconds until stopped or the lease is lost."""

    def __init__(self, store: Store, claim: Claim, lease_s: float, interval: float) -> None:
        self._store, self._claim, self._lease_s = store, claim, lease_s
        self._interval = interval
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._beat, name="shipline-heartbeat", daemon=True)

    def until(self) -> datetime:
        return m.utcnow() + timedelta(seconds=self._lease_s)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with self._store.session() as session:
                    renew_lease(session, self._claim, self.until())
            except LeaseLost:
                self.lost = True
                return
            except Exception:  # a transient store error: the next beat tries again
                continue

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join()


class Worker:
    """Claims and runs steps until told to stop or until nothing is left."""

    def __init__(
        self,
        project: Any,
        worker_id: str | None = None,
        on_event: OnEvent | None = None,
    ) -> None:
        self.project = project
        project.router  # noqa: B018 - build providers now: a broken config fails before any claim
        self.worker_id = worker_id or new_worker_id()
        self.on_event = on_event
        self.runner = AttemptRunner(project, on_event)
        settings = project.settings.worker
        self.lease_s = settings.lease_s
        self.heartbeat_s = settings.heartbeat_s or settings.lease_s / 3
        self.poll_s = settings.poll_s

    def run_once(self) -> bool:
        """Claim and run one attempt. False when nothing was runnable."""
        claim = claim_next(self.project.store, self.worker_id, self.lease_s)
        if claim is None:
            return False
        with Heartbeat(self.project.store, claim, self.lease_s, self.heartbeat_s) as beat:
            try:
                self.runner.run(claim, beat.until)
            except LeaseLost:
                if self.on_event:
                    self.on_event(
                        claim.ticket_id,
                        "lease-lost",
                        f"{claim.phase}: lease lost; another worker continues",
                    )
        return True

    def run_until_idle(self, stop: threading.Event | None = None) -> int:
        """Work until no step is runnable and none is in flight. Returns attempts run."""
        done = 0
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.run_once():
                done += 1
                continue
            if live_claims(self.project.store) == 0:
                break
            stop.wait(self.poll_s)
        return done

    def work_forever(self, stop: threading.Event, idle: Callable[[], None] | None = None) -> int:
        """The long-running worker: poll for work until `stop` is set (after the current step)."""
        done = 0
        while not stop.is_set():
            if self.run_once():
                done += 1
            else:
                if idle:
                    idle()
                stop.wait(self.poll_s)
        return done


def run_workers(
    project: Any, count: int, on_event: OnEvent | None = None, stop: threading.Event | None = None
) -> int:
    """`shipline run --workers N`: N worker threads sharing one project, until idle."""
    stop = stop or threading.Event()
    totals = [0] * count
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        try:
            totals[index] = Worker(project, on_event=on_event).run_until_idle(stop)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            stop.set()

    if count == 1:
        loop(0)
    else:
        threads = [
            threading.Thread(target=loop, args=(i,), name=f"shipline-worker-{i}")
            for i in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return sum(totals)
