"""Workers: claim the next runnable step with a lease, keep it alive with a heartbeat, run it.

There is no conductor. Steps are claimed with the store's generic lease (store/lease.py): on
SQLite a claim is one BEGIN IMMEDIATE transaction; on PostgreSQL it is SELECT … FOR UPDATE
SKIP LOCKED, so any number of workers on any number of machines share one queue. A worker
that dies stops heartbeating; its lease expires and any worker takes the step over from the
last committed attempt or verdict.

A store fault is a StoreError. A transient one (a lock held by another process, a full disk,
a server that went away) is ridden out: the worker says so, backs off and tries again. Any
other one stops it. At each claim the worker checks that its store is still the one it
opened (store.db.Store.verify): one deleted or replaced under it stops it, loudly.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
from shipline.errors import StoreError
from shipline.store import models as m
from shipline.store.db import Store
from shipline.store.lease import Heartbeat, LeaseLost, lease_token

# How often an idle worker does its housekeeping (pruning old call payloads).
HOUSEKEEPING_EVERY_S = 3600.0
# Waits between tries after a transient store fault: 1, 2, 4, … seconds, at most 30.
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
# `run` (until idle) gives up after this many faults in a row; `work` never does.
RUN_STORE_TRIES = 8

OnNotice = Callable[[str], None]


def backoff_s(tries: int) -> float:
    """The wait after the `tries`-th transient store fault in a row."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, tries - 1))


def new_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def claim_next(store: Store, worker_id: str, lease_s: float) -> tuple[Claim, AttemptContext] | None:
    """Claim the next runnable step (by priority, due time, then ticket) and read its context,
    or None. Atomic on both backends."""
    now = m.utcnow()
    with store.transaction() as conn:
        store.verify(conn)  # never take work from a store deleted or replaced under us
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
        on_notice: OnNotice | None = None,
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
        self.on_notice = on_notice or (lambda _message: None)
        self._faults = 0  # transient store faults in a row

    @contextmanager
    def _riding_out(self, stop: threading.Event, tries: int | None) -> Iterator[None]:
        """Wait out a transient store fault (saying so), at most `tries` in a row; re-raise
        any other."""
        try:
            yield
        except StoreError as exc:
            self._faults += 1
            if not exc.transient or (tries is not None and self._faults > tries):
                raise
            delay = backoff_s(self._faults)
            self.on_notice(f"{exc}; trying again in {delay:g} s (try {self._faults + 1})")
            stop.wait(delay)
        else:
            self._faults = 0

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
        idle = False
        try:
            while not stop.is_set() and not idle:
                with self._riding_out(stop, RUN_STORE_TRIES):
                    if self.run_once():
                        done += 1
                        continue
                    self.housekeeping()
                    idle = live_claims(self.project.store) == 0
                    if not idle:
                        stop.wait(self.poll_s)
        finally:
            self.close()
        return done

    def work_forever(self, stop: threading.Event, idle: Callable[[], None] | None = None) -> int:
        """The long-running worker: poll for work until `stop` is set (after the current step)."""
        done = 0
        try:
            while not stop.is_set():
                with self._riding_out(stop, None):
                    if self.run_once():
                        done += 1
                        continue
                    self.housekeeping()
                if idle:
                    idle()
                stop.wait(self.poll_s)
            self.project.store.check_file()  # the last step went into the store we opened
        finally:
            self.close()
        return done


def run_workers(
    project: Any,
    count: int,
    on_event: OnEvent | None = None,
    stop: threading.Event | None = None,
    on_notice: OnNotice | None = None,
) -> int:
    """`shipline run --workers N`: N worker threads sharing one project, until idle."""
    stop = stop or threading.Event()
    totals = [0] * count
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        try:
            worker = Worker(project, on_event=on_event, on_notice=on_notice)
            totals[index] = worker.run_until_idle(stop)
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
