"""Crash safety: SIGKILLed workers, expired leases, and concurrent workers on one queue."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from conftest import Project, demo_ticket, make_project, replay_rules
from shipline.api import ticket_detail
from shipline.engine.loop import LeaseLost, renew_lease
from shipline.engine.project import open_project
from shipline.engine.tickets import NewTicket, create_ticket
from shipline.engine.worker import claim_next
from shipline.store import models as m

FAST_LEASES = "\n[worker]\nlease_s = 1.0\nheartbeat_s = 0.25\npoll_s = 0.1\n"


def slow_rules(delay: float) -> list[dict[str, Any]]:
    return [{**rule, "delay_s": delay} for rule in replay_rules()]


def add_demo_tickets(project: Project) -> None:
    for kind in ("feature", "hotfix", "epic"):
        ticket = demo_ticket(kind)
        project.add(kind, ticket["title"], ticket["body"])


def final_state(project: Project) -> list[dict[str, Any]]:
    """Everything that must not depend on crashes: tickets, phases, attempts, verdicts, text."""
    opened = open_project(project.root, db=project.db_url)
    state = []
    with opened.store.session() as session:
        tickets = session.scalars(select(m.Ticket).order_by(m.Ticket.id)).all()
        for ticket in tickets:
            state.append(
                {
                    "id": ticket.id,
                    "kind": ticket.kind,
                    "title": ticket.title,
                    "status": ticket.status,
                    "handoff": ticket.handoff_reason,
                    "parent": ticket.parent_id,
                    "key": ticket.child_key,
                    "steps": [
                        (
                            s.phase,
                            s.status,
                            s.attempts_used,
                            s.deliverable,
                            [
                                (
                                    a.number,
                                    a.text,
                                    a.verdict.passed if a.verdict else None,
                                    a.verdict.objections if a.verdict else None,
                                )
                                for a in s.attempts
                            ],
                        )
                        for s in ticket.steps
                    ],
                }
            )
    opened.close()
    return state


def events(project: Project) -> list[tuple[int, str, str]]:
    opened = open_project(project.root, db=project.db_url)
    with opened.store.session() as session:
        rows = [
            (e.ticket_id, e.kind, e.message)
            for e in session.scalars(select(m.Event).order_by(m.Event.id))
        ]
    opened.close()
    return rows


def start_worker(project: Project) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "shipline"]
    if project.db_url:
        command += ["--db", project.db_url]
    proc = subprocess.Popen(
        [*command, "work"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "worker … polling …": the worker is up
    assert "polling" in line, line + (proc.stderr.read() if proc.stderr else "")
    return proc


@pytest.mark.slow
def test_sigkilled_worker_resumes_to_the_same_final_state(tmp_path: Path) -> None:
    rules = slow_rules(0.12)
    reference = make_project(tmp_path / "ref", None, FAST_LEASES, rules)
    crashed = make_project(tmp_path / "crash", None, FAST_LEASES, rules)
    add_demo_tickets(reference)
    add_demo_tickets(crashed)
    reference.cli("run")

    # Kill a worker several times at different points, restarting each time.
    for delay in (0.3, 0.75, 0.2, 1.1, 0.5, 1.4, 0.9):
        proc = start_worker(crashed)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    crashed.cli("run")

    after, expected = final_state(crashed), final_state(reference)
    statuses = [(t["id"], t["status"], t["handoff"]) for t in after]
    assert statuses == [(t["id"], t["status"], t["handoff"]) for t in expected]
    assert after == expected
    statuses = [t["status"] for t in final_state(crashed)]
    assert statuses == ["done"] * 5  # no ticket lost, no child duplicated
    log = events(crashed)
    assert any(kind == "resumed" for _, kind, _ in log), "no kill landed inside a phase"
    # No finished phase runs again: after a phase passed, nobody starts or resumes it.
    passed: set[tuple[int, str]] = set()
    for ticket_id, kind, message in log:
        phase = message.split(" ", 1)[0].rstrip(":")
        if kind in ("started", "resumed"):
            assert (ticket_id, phase) not in passed, f"#{ticket_id} {phase} ran again"
        if kind == "passed":
            assert (ticket_id, phase) not in passed, f"#{ticket_id} {phase} passed twice"
            passed.add((ticket_id, phase))


@pytest.mark.slow
def test_two_workers_never_complete_the_same_step_on_postgres(tmp_path: Path, pg_url: str) -> None:
    project = make_project(tmp_path / "repo", pg_url, FAST_LEASES, slow_rules(0.03))
    feature = demo_ticket("feature")
    for _ in range(6):
        project.add("feature", feature["title"], feature["body"])
    workers = [start_worker(project) for _ in range(3)]
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if all(t["status"] == "done" for t in project.tickets()):
                break
            time.sleep(1)
    finally:
        for proc in workers:
            proc.send_signal(signal.SIGINT)
        outputs = [proc.communicate(timeout=30) for proc in workers]
    assert all(proc.returncode == 0 for proc in workers), outputs
    assert all("Traceback" not in err for _, err in outputs)
    opened = open_project(project.root, db=pg_url)
    with opened.store.session() as session:
        steps = session.scalars(select(m.Step)).all()
        assert len(steps) == 36 and all(s.status == "passed" for s in steps)
        for step in steps:
            verdicts = [a.verdict for a in step.attempts if a.verdict is not None]
            assert sum(v.passed for v in verdicts) == 1
            assert len(step.attempts) == step.attempts_used
        passed_events = session.scalar(
            select(func.count()).select_from(m.Event).where(m.Event.kind == "passed")
        )
        assert passed_events == 36
        hosts = {a.worker.rsplit("#", 1)[0] for s in steps for a in s.attempts}
        assert len(hosts) >= 2, "the work was not shared between workers"
    opened.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_claims_never_hand_out_a_step_twice(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    db = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    project = make_project(tmp_path / "repo", db)
    opened = open_project(project.root, db=db)
    for i in range(5):
        create_ticket(opened.store, opened.settings, NewTicket("hotfix", f"bug {i}"))
    barrier = threading.Barrier(8)
    claims: list[Any] = []

    def claim(index: int) -> None:
        barrier.wait()
        claimed = claim_next(opened.store, f"w{index}", lease_s=60)
        claims.append(claimed[0] if claimed else None)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = [c for c in claims if c is not None]
    assert len(got) == 5
    assert len({c.step_id for c in got}) == 5
    opened.close()


def test_a_worker_whose_lease_expired_cannot_commit(sqlite_project: Project) -> None:
    opened = open_project(sqlite_project.root)
    ticket_id = create_ticket(opened.store, opened.settings, NewTicket("hotfix", "bug"))
    claimed = claim_next(opened.store, "slow", lease_s=0.05)
    assert claimed is not None
    slow = claimed[0]
    time.sleep(0.1)
    taken = claim_next(opened.store, "fast", lease_s=60)
    assert taken is not None
    fast = taken[0]
    assert fast.step_id == slow.step_id and fast.resumed
    with pytest.raises(LeaseLost), opened.store.session() as session:
        renew_lease(session, slow, m.utcnow())
    detail = ticket_detail(opened.store, ticket_id)
    assert any(e.kind == "resumed" for e in detail.events)
    opened.close()
