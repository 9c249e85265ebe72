"""Work beyond code tickets: the `work` table, claimed with the ticket steps' lease.

Real stores: a SQLite file and a fresh PostgreSQL database. Workers are threads and real
processes; a holder is SIGKILLed for real.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from shipline.store import models as m
from shipline.store.db import Store, open_store
from shipline.store.lease import Heartbeat, LeaseLost
from shipline.store.work import (
    WorkItem,
    claim_next,
    enqueue,
    fail,
    finish,
    release,
    retry_later,
    work_item,
)


@pytest.fixture
def store(tmp_path: Path, store_url: str | None) -> Iterator[Store]:
    opened = open_store(store_url or "sqlite:///work.db", tmp_path, create=True)
    yield opened
    opened.close()


def add(store: Store, kind: str = "send", **options: Any) -> int:
    with store.transaction() as conn:
        return enqueue(conn, kind, options.pop("payload", {"n": 1}), **options)


def claim(store: Store, worker: str = "w", lease_s: float = 60, **options: Any) -> WorkItem | None:
    with store.transaction() as conn:
        return claim_next(conn, worker, lease_s, **options)


def row(store: Store, item_id: int) -> m.Work:
    with store.transaction() as conn:
        found = work_item(conn, item_id)
    assert found is not None
    return found


def owner_events(store: Store, item_id: int) -> list[tuple[str, str]]:
    with store.session() as session:
        return [
            (e.kind, e.message)
            for e in session.scalars(
                select(m.Event)
                .where(m.Event.owner_kind == m.OwnerKind.WORK, m.Event.owner_id == item_id)
                .order_by(m.Event.id)
            )
        ]


def test_an_item_is_claimed_finished_and_never_claimed_again(store: Store) -> None:
    item_id = add(store, "deploy", payload={"env": "staging"}, owner=(m.OwnerKind.TICKET, 7))
    item = claim(store, "w1")
    assert item is not None
    assert (item.id, item.kind, item.payload) == (item_id, "deploy", {"env": "staging"})
    assert (item.owner_kind, item.owner_id, item.token, item.resumed) == (
        "ticket",
        7,
        "w1#1",
        False,
    )
    assert claim(store, "w2") is None  # held
    with store.transaction() as conn:
        finish(conn, item, {"version": "1.2.3"})
    done = row(store, item_id)
    assert done.status == m.WorkStatus.DONE and done.result == {"version": "1.2.3"}
    assert (done.attempts, done.claims, done.lease_owner) == (1, 1, None)
    assert done.finished_at is not None
    assert claim(store, "w2") is None


def test_higher_priority_first_then_earliest_due_then_oldest(store: Store) -> None:
    now = m.utcnow()
    low = add(store)
    old_due = add(
        store, payload={"name": "due earlier"}, priority=5, due_at=now - timedelta(hours=2)
    )
    new_due = add(store, payload={"name": "due later"}, priority=5, due_at=now - timedelta(hours=1))
    undated = add(store, priority=5)  # no due time: due since it was added
    high = add(store, priority=9)
    order = []
    while (item := claim(store)) is not None:
        order.append(item.id)
    assert order == [high, undated, old_due, new_due, low]


def test_an_item_due_later_is_not_claimed_before_it_is_due(store: Store) -> None:
    now = m.utcnow()
    later = add(store, due_at=now + timedelta(minutes=10), priority=100)
    assert claim(store, now=now) is None
    assert claim(store, now=now + timedelta(minutes=9)) is None
    item = claim(store, now=now + timedelta(minutes=10))
    assert item is not None and item.id == later


def test_claims_only_the_kinds_asked_for(store: Store) -> None:
    add(store, "deploy", priority=9)
    send = add(store, "send")
    item = claim(store, kinds=["send", "classify"])
    assert item is not None and item.id == send
    assert claim(store, kinds=["classify"]) is None
    assert claim(store, kinds=[]) is None


def test_retry_later_waits_for_its_new_due_time_and_counts_the_try(store: Store) -> None:
    item_id = add(store)
    now = m.utcnow()
    item = claim(store, now=now)
    assert item is not None
    with store.transaction() as conn:
        retry_later(conn, item, "SMTP 451: try again", now + timedelta(minutes=5))
    waiting = row(store, item_id)
    assert waiting.status == m.WorkStatus.PENDING and waiting.attempts == 1
    assert waiting.last_error == "SMTP 451: try again"
    assert claim(store, now=now + timedelta(minutes=1)) is None
    again = claim(store, "w2", now=now + timedelta(minutes=6))
    assert again is not None and again.id == item_id
    assert (again.attempts, again.claims, again.resumed) == (1, 2, False)
    assert [kind for kind, _ in owner_events(store, item_id)] == ["retry"]


def test_a_failed_item_is_given_up(store: Store) -> None:
    item_id = add(store)
    item = claim(store)
    assert item is not None
    with store.transaction() as conn:
        fail(conn, item, "no such mailbox")
    given_up = row(store, item_id)
    assert given_up.status == m.WorkStatus.FAILED and given_up.last_error == "no such mailbox"
    assert claim(store, now=m.utcnow() + timedelta(days=1)) is None
    assert owner_events(store, item_id) == [("failed", "send: no such mailbox")]


def test_a_released_item_is_runnable_again_without_a_try_counted(store: Store) -> None:
    item_id = add(store)
    item = claim(store, "stopping")
    assert item is not None
    with store.transaction() as conn:
        release(conn, item)
    again = claim(store, "next")
    assert again is not None and again.id == item_id and not again.resumed
    assert row(store, item_id).attempts == 0
    with pytest.raises(LeaseLost), store.transaction() as conn:
        finish(conn, item)  # the released token is no longer the holder


def test_an_expired_lease_is_taken_over_and_the_stale_owner_cannot_write(store: Store) -> None:
    item_id = add(store)
    now = m.utcnow()
    stale = claim(store, "slow", lease_s=30, now=now)
    assert stale is not None
    assert claim(store, "fast", now=now + timedelta(seconds=29)) is None  # still leased
    taken = claim(store, "fast", now=now + timedelta(seconds=31))
    assert taken is not None and taken.id == item_id
    assert taken.resumed and taken.token == "fast#2"
    for write in (
        lambda conn: finish(conn, stale, {"by": "slow"}),
        lambda conn: fail(conn, stale, "slow"),
        lambda conn: retry_later(conn, stale, "slow", now),
        lambda conn: release(conn, stale),
        lambda conn: stale.renew(conn, now + timedelta(hours=1)),
    ):
        with pytest.raises(LeaseLost), store.transaction() as conn:
            write(conn)
    with store.transaction() as conn:
        finish(conn, taken, {"by": "fast"})
    done = row(store, item_id)
    assert done.result == {"by": "fast"} and done.attempts == 1
    assert owner_events(store, item_id) == [
        ("resumed", "send: taken over by fast after a lost worker's lease expired")
    ]


def test_concurrent_worker_threads_claim_each_item_exactly_once(store: Store) -> None:
    ids = [add(store, payload={"n": i}) for i in range(40)]
    barrier = threading.Barrier(6)
    done: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            barrier.wait()
            while (item := claim(store, name)) is not None:
                with store.transaction() as conn:
                    finish(conn, item, {"by": name})
                done.append((item.id, name))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(item_id for item_id, _ in done) == ids
    for item_id, name in done:
        finished = row(store, item_id)
        assert finished.claims == 1 and finished.result == {"by": name}


WORKER_PROCESS = """
import json, sys
from pathlib import Path
from shipline.store.db import Store
from shipline.store.work import claim_next, finish

store = Store(sys.argv[1], Path(sys.argv[2]))
name = sys.argv[3]
print("ready", flush=True)
sys.stdin.readline()  # start together
done = []
while True:
    with store.transaction() as conn:
        item = claim_next(conn, name, 60)
        if item is None:
            break
        finish(conn, item, {"by": name})
    done.append(item.id)
print(json.dumps(done), flush=True)
"""


def test_concurrent_worker_processes_claim_each_item_exactly_once(
    store: Store, tmp_path: Path
) -> None:
    ids = [add(store, payload={"n": i}) for i in range(30)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER_PROCESS, store.url, str(tmp_path), f"p{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    claimed: list[int] = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        claimed += json.loads(out.strip().splitlines()[-1])
    assert sorted(claimed) == ids
    assert all(row(store, item_id).claims == 1 for item_id in ids)


HOLDER_PROCESS = """
import sys, time
from pathlib import Path
from shipline.store.db import Store
from shipline.store.lease import Heartbeat
from shipline.store.work import claim_next

store = Store(sys.argv[1], Path(sys.argv[2]))
with store.transaction() as conn:
    item = claim_next(conn, "holder", 1.0)
heartbeat = Heartbeat(store, lease_s=1.0, interval=0.2)
heartbeat.watch(item)
print(item.id, item.token, flush=True)
time.sleep(600)  # working on it, until killed
"""


def test_a_sigkilled_holder_s_item_is_taken_over(store: Store, tmp_path: Path) -> None:
    item_id = add(store, "deploy")
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER_PROCESS, store.url, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else ""
        held_id, token = line.split()
        assert int(held_id) == item_id
        time.sleep(1.6)  # past the 1 s lease: only the heartbeat keeps it
        assert claim(store, "other") is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    taken = None
    while taken is None and time.monotonic() < deadline:
        time.sleep(0.2)
        taken = claim(store, "other")
    assert taken is not None and taken.id == item_id and taken.resumed
    assert taken.token == "other#2"
    dead = WorkItem(item_id, "deploy", {}, None, None, 0, token, 1, 0, False)
    with pytest.raises(LeaseLost), store.transaction() as conn:
        finish(conn, dead, {"by": "the dead holder"})
    with store.transaction() as conn:
        finish(conn, taken, {"by": "other"})
    assert row(store, item_id).result == {"by": "other"}


def test_a_heartbeat_keeps_an_item_and_stops_when_the_lease_is_lost(store: Store) -> None:
    add(store)
    item = claim(store, "beating", lease_s=0.5)
    assert item is not None
    heartbeat = Heartbeat(store, lease_s=0.5, interval=0.1)
    heartbeat.watch(item)
    try:
        time.sleep(0.9)
        assert claim(store, "other") is None  # renewed past its first lease
    finally:
        heartbeat.watch(None)
        heartbeat.close()
    time.sleep(0.7)
    taken = claim(store, "other")
    assert taken is not None and taken.resumed
    with pytest.raises(LeaseLost), store.transaction() as conn:
        item.renew(conn, m.utcnow() + timedelta(seconds=5))
