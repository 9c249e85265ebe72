"""Preflight: a ticket's first code phase starts only from a target that exists and is green.

The decision is pure and table-driven; the check itself runs on a real git repository (the
ledger, tests/second_repo.py), a real store and a real judge command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from conftest import git
from second_repo import write_ledger_repo
from shipline.config import parse_settings
from shipline.engine import sql
from shipline.engine.code import CodePath
from shipline.engine.preflight import BaseFacts, BaseRun, Preflight, decide_preflight
from shipline.engine.tickets import NewTicket, create_ticket
from shipline.store import models as m
from shipline.store.db import Store, open_store

BASE = "ab12cd34ef" + "0" * 30


def _run(exit_code: int = 0, timed_out: bool = False, excerpt: str = "") -> BaseRun:
    return BaseRun("pytest -q", exit_code, timed_out, 2.14, 60.0, "/l/001-preflight.log", excerpt)


@pytest.mark.parametrize(
    ("facts", "action", "line"),
    [
        (
            BaseFacts(7, "mian", ("dev", "main"), "/r"),
            "hand-off",
            "preflight: [merge] target = 'mian' is not a branch of /r (its branches: dev, main): "
            "set [merge] target in shipline.toml to the branch tickets start from, then "
            "`shipline retry 7`",
        ),
        (
            BaseFacts(7, "main", (), "/r"),
            "hand-off",
            "preflight: [merge] target = 'main' is not a branch of /r (its branches: none): "
            "set [merge] target in shipline.toml to the branch tickets start from, then "
            "`shipline retry 7`",
        ),
        (BaseFacts(7, "main", ("main",), "/r"), "run", ""),  # the worktree comes next
        (BaseFacts(7, "main", ("main",), "/r", BASE), "run", ""),
        (
            BaseFacts(7, "main", ("main",), "/r", BASE, known=3),
            "pass",
            "the judge was green on main at ab12cd34ef for ticket #3: not run again",
        ),
        (
            BaseFacts(7, "main", ("main",), "/r", BASE, run=_run()),
            "pass",
            "the judge is green on main at ab12cd34ef: the ticket can start",
        ),
        (
            BaseFacts(7, "main", ("main",), "/r", BASE, run=_run(1, excerpt="FAILED x")),
            "hand-off",
            "preflight: the judge is red on main at ab12cd34ef before this ticket changed "
            "anything: `pytest -q` exit 1 after 2.1 s (log: /l/001-preflight.log). A red or "
            "hanging base is not the ticket's to fix: make main green (or fix [judge] command), "
            "then `shipline retry 7`; no attempt was spent.\nFAILED x",
        ),
        (
            BaseFacts(7, "main", ("main",), "/r", BASE, run=_run(-9, timed_out=True)),
            "hand-off",
            "preflight: the judge is red on main at ab12cd34ef before this ticket changed "
            "anything: `pytest -q` killed after the 60 s timeout after 2.1 s (log: "
            "/l/001-preflight.log). A red or hanging base is not the ticket's to fix: make main "
            "green (or fix [judge] command), then `shipline retry 7`; no attempt was spent.",
        ),
        (  # a run killed at the timeout is red, whatever its exit code
            BaseFacts(7, "main", ("main",), "/r", BASE, run=_run(0, timed_out=True)),
            "hand-off",
            None,
        ),
    ],
)
def test_preflight_decides_from_what_it_knows(
    facts: BaseFacts, action: str, line: str | None
) -> None:
    verdict = decide_preflight(facts)
    assert verdict.action == action
    if line is not None:
        assert verdict.line == line


def _store_and_tickets(root: Path, count: int) -> tuple[Store, list[tuple[int, int]]]:
    """A store with `count` hotfix tickets: (ticket id, its tests step id) each."""
    store = open_store("sqlite:///.shipline/shipline.db", root, create=True)
    settings = parse_settings({}, "test")
    made = []
    for n in range(count):
        tid = create_ticket(store, settings, NewTicket(kind="hotfix", title=f"t{n}"))
        with store.session() as session:
            step = session.scalars(
                select(m.Step).where(m.Step.ticket_id == tid, m.Step.phase == "tests")
            ).one()
            made.append((tid, step.id))
    return store, made


def _preflight(root: Path, store: Store, judge: str, **merge: Any) -> Preflight:
    settings = parse_settings({"judge": {"command": judge, "timeout_s": 1}, "merge": merge}, "t")
    return Preflight(CodePath(settings, root, store), store)


def test_a_green_base_is_judged_once_per_commit_and_a_red_one_every_time(tmp_path: Path) -> None:
    root = tmp_path / "ledger"
    root.mkdir()
    write_ledger_repo(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ledger")
    head = git(root, "rev-parse", "main").strip()
    store, [(first, first_step), (second, second_step), (third, third_step)] = _store_and_tickets(
        root, 3
    )

    # a target that is not a branch: nothing is run, no worktree is made
    missing = _preflight(root, store, "true", target="trunk").check(first, "t0", first_step)
    assert missing.handoff is not None
    assert missing.handoff.startswith("preflight: [merge] target = 'trunk' is not a branch of ")
    assert "(its branches: main)" in missing.handoff
    assert missing.runs == [] and not (tmp_path / "ledger.worktrees" / str(first)).exists()

    # red: run each time it is asked (the fix may lie outside git), never remembered
    for _ in range(2):
        red = _preflight(root, store, "exit 3").check(first, "t0", first_step)
        assert red.handoff is not None
        assert red.handoff.startswith(f"preflight: the judge is red on main at {head[:10]}")
        assert "`exit 3` exit 3 after" in red.handoff
        assert [(r["purpose"], r["exit_code"], r["commit"]) for r in red.runs] == [
            ("preflight", 3, head)
        ]
        with store.transaction() as conn:
            conn.execute(sql.INSERT_JUDGE_RUNS, red.runs)

    # hanging: killed at the timeout, and said so
    hung = _preflight(root, store, "sleep 30").check(first, "t0", first_step)
    assert hung.handoff is not None and "killed after the 1 s timeout" in hung.handoff
    assert hung.runs[0]["timed_out"] is True and hung.runs[0]["duration_s"] < 10

    # green: run once for the commit; another ticket on the same commit reuses it
    green = _preflight(root, store, "true").check(first, "t0", first_step)
    assert green.handoff is None
    assert green.events[-1] == (
        "preflight",
        f"the judge is green on main at {head[:10]}: the ticket can start",
    )
    with store.transaction() as conn:
        conn.execute(sql.INSERT_JUDGE_RUNS, green.runs)
    reused = _preflight(root, store, "true").check(second, "t1", second_step)
    assert reused.handoff is None and reused.runs == []
    assert reused.events[-1] == (
        "preflight",
        f"the judge was green on main at {head[:10]} for ticket #{first}: not run again",
    )
    # another judge command, or another commit, is judged afresh
    other = _preflight(root, store, "true && true").check(third, "t2", third_step)
    assert [r["purpose"] for r in other.runs] == ["preflight"]
