"""Workers: claim the next runnable step with a lease, keep it alive with a heartbeat, run it.

There is no conductor. Steps are claimed with the store's generic lease (store/lease.py): on
SQLite a claim is one BEGIN IMMEDIATE transaction; on PostgreSQL it is SELECT … FOR UPDATE
SKIP LOCKED, so any number of workers on any number of machines share one queue. A worker
that dies stops heartbeating; its lease expires and any worker takes the step over from the
last committed attempt or verdict.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from shipline.engine import lifecycle, sql
from shipline.engine.loop import (
    AttemptContext,
    AttemptRunner,
    Claim,
    OnEvent,
    load_context,
)
from shipline.store import models as m
from shipline.store.db import Store
from shipline.store.lease import Heartbeat, LeaseLost, lease_token

# How often an idle worker does its housekeeping (pruning old call payloads).
HOUSEKEEPING_EVERY_S = 3600.0


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def claim_next(store: Store, worker_id: str, lease_s: float) -> tuple[Claim, AttemptContext] | None:
    """Claim the next runnable step (by priority, due time, then ticket) and read its context,
    or None. Atomic on both backends."""
    now = m.utcnow()
    with store.transaction() as conn:
        row = conn.execute(sql.CLAIM, {"now": now}).first()
        if row is None:
            return None
        resumed = row.status == m.CLAIMED
        token = lease_token(worker_id, row.claims + 1)
        conn.execute(
            sql.TAKE_STEP,
            {
                "row_id": row.id,
                "token": token,
                "until": now + timedelta(seconds=lease_s),
                "now": now,
            },
        )
        running = lifecycle.decide_claim(
            row.phase, worker_id, resumed=resumed, first=row.claims == 0
        )
        lifecycle.apply(conn, lifecycle.Target(row.ticket_id), running, now)
        claim = Claim(
            step_id=row.id,
            ticket_id=row.ticket_id,
            phase=row.phase,
            token=token,
            resumed=resumed,
            last=row.position == len(row.route) - 1,
            parent_id=row.parent_id,
            attempts_used=row.attempts_used,
            attempts_allowed=row.attempts_allowed,
            route=tuple(row.route),
        )
        return claim, load_context(conn, claim, row)


def live_claims(store: Store) -> int:
    """Steps held under an unexpired lease (someone is working on them)."""
    with store.transaction() as conn:
        return int(conn.execute(sql.LIVE_CLAIMS, {"now": m.utcnow()}).scalar() or 0)


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
        self.heartbeat = Heartbeat(project.store, self.lease_s, self.heartbeat_s)
        self._housekept: float | None = None  # time.monotonic() of the last housekeeping

    def run_once(self) -> bool:
        """Claim and run one attempt. False when nothing was runnable."""
        claimed = claim_next(self.project.store, self.worker_id, self.lease_s)
        if claimed is None:
            return False
        claim, context = claimed
        self.heartbeat.watch(claim)
        try:
            self.runner.run(claim, context, self.heartbeat.until)
        except LeaseLost:
            if self.on_event:
                self.on_event(
                    claim.ticket_id,
                    "lease-lost",
                    f"{claim.phase}: lease lost; another worker continues",
                )
        finally:
            self.heartbeat.watch(None)
        return True

    def close(self) -> None:
        self.heartbeat.close()

    def housekeeping(self) -> None:
        """When nothing is runnable, off the per-step path: prune the call payloads past
        `[calls] payload_retention_days`. At most once an hour per worker."""
        now = time.monotonic()
        if self._housekept is not None and now - self._housekept < HOUSEKEEPING_EVERY_S:
            return
        self._housekept = now
        self.project.store.prune_payloads(self.project.settings.calls.payload_retention_days)

    def run_until_idle(self, stop: threading.Event | None = None) -> int:
        """Work until no step is runnable and none is in flight. Returns attempts run."""
        done = 0
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                if self.run_once():
                    done += 1
                    continue
                self.housekeeping()
                if live_claims(self.project.store) == 0:
                    break
                stop.wait(self.poll_s)
        finally:
            self.close()
        return done

    def work_forever(self, stop: threading.Event, idle: Callable[[], None] | None = None) -> int:
        """The long-running worker: poll for work until `stop` is set (after the current step)."""
        done = 0
        try:
            while not stop.is_set():
                if self.run_once():
                    done += 1
                else:
                    self.housekeeping()
                    if idle:
                        idle()
                    stop.wait(self.poll_s)
        finally:
            self.close()
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
