"""States that don't lie, end to end on the second repository (ledger, tests/second_repo.py).

A ticket is done only when its change reached its target. Approving a code phase applies what
was approved, judges it and lands it, or is refused saying why. A red base stops a ticket
before any attempt is spent. `ticket show` says what the judge said beside the validator, and
whether any code was applied at all.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, git
from second_repo import OVERDRAFT_HOTFIX, ledger_project

PASS = '{"pass": true, "objections": []}'

DIAGNOSIS = """\
## Reproduction
    >>> Account("ada", 100).withdraw(500)  # no error; the balance is -400

## Root cause
`Account.withdraw` in ledger/accounts.py never compares the amount with the balance.

## Fix plan
Raise `InsufficientFunds` in `withdraw` when the amount is over the balance.

## Regression test
tests/test_overdraft.py: withdrawing more than the balance raises and keeps the balance.
"""

TESTS = """\
### File: tests/test_overdraft.py
```python
import pytest

from ledger.accounts import Account, InsufficientFunds


def test_withdrawing_more_than_the_balance_raises_and_keeps_it():
    account = Account("ada", 100)
    with pytest.raises(InsufficientFunds):
        account.withdraw(500)
    assert account.balance == 100
```
"""


def accounts(withdraw: str, statement: str = "") -> str:
    """ledger/accounts.py with this body of `withdraw`; a `statement` prefix breaks the
    repository's own statement test."""
    prefix = f"{statement!r} + " if statement else ""
    return (
        '"""An account holds a balance in cents."""\n\n'
        "from ledger.money import format_cents\n\n\n"
        "class InsufficientFunds(Exception):\n    pass\n\n\n"
        "class Account:\n"
        "    def __init__(self, owner: str, balance: int = 0) -> None:\n"
        "        self.owner = owner\n"
        "        self.balance = balance\n\n"
        "    def deposit(self, cents: int) -> None:\n"
        "        if cents <= 0:\n"
        '            raise ValueError("a deposit must be positive")\n'
        "        self.balance += cents\n\n"
        "    def withdraw(self, cents: int) -> None:\n"
        + textwrap.indent(withdraw, " " * 8)
        + "\n    def statement(self) -> str:\n"
        + f'        return {prefix}f"{{self.owner}}: {{format_cents(self.balance)}}"\n'
    )


GUARDED = """\
if cents <= 0:
    raise ValueError("a withdrawal must be positive")
if cents > self.balance:
    raise InsufficientFunds(f"{self.owner} has {format_cents(self.balance)}")
self.balance -= cents
"""
# what someone else lands on main meanwhile: the same lines, another change
MAIN_MEANWHILE = """\
if cents <= 0:
    raise ValueError(f"a withdrawal must be positive (got {cents})")
self.balance -= cents
"""
RESOLVED = """\
if cents <= 0:
    raise ValueError(f"a withdrawal must be positive (got {cents})")
if cents > self.balance:
    raise InsufficientFunds(f"{self.owner} has {format_cents(self.balance)}")
self.balance -= cents
"""
# a fix-ci answer that copies the conflicted file, markers and all
WITH_MARKERS = """\
if cents <= 0:
<<<<<<< HEAD
    raise ValueError("a withdrawal must be positive")
if cents > self.balance:
    raise InsufficientFunds(f"{self.owner} has {format_cents(self.balance)}")
=======
    raise ValueError(f"a withdrawal must be positive (got {cents})")
>>>>>>> main
self.balance -= cents
"""


def conflicted(withdraw: str) -> str:
    """accounts.py as git leaves it in a conflict: the markers at the start of their lines."""
    lines = accounts(withdraw).splitlines(keepends=True)
    marks = ("<<<<<<<", "=======", ">>>>>>>")
    return "".join(line.lstrip() if line.lstrip().startswith(marks) else line for line in lines)


def file_block(path: str, content: str) -> str:
    return f"### File: {path}\n```python\n{content}```\n"


ORIGINAL_WITHDRAW = """\
if cents <= 0:
    raise ValueError("a withdrawal must be positive")
self.balance -= cents
"""
STATEMENT = '        return f"{self.owner}: {format_cents(self.balance)}"\n'


def edit_block(path: str, *pairs: tuple[str, str]) -> str:
    """An `### Edit:` block of SEARCH/REPLACE pairs (docs/phases.md, Edits)."""
    body = "".join(f"<<<<<<< SEARCH\n{old}=======\n{new}>>>>>>> REPLACE\n" for old, new in pairs)
    return f"### Edit: {path}\n```python\n{body}```\n"


def statement_line(prefix: str) -> str:
    return f'        return {prefix!r} + f"{{self.owner}}: {{format_cents(self.balance)}}"\n'


def withdraw_edit(withdraw: str, statement: str = "") -> str:
    """Edit ledger/accounts.py as `accounts(withdraw, statement)` would write it whole."""
    pairs = [(textwrap.indent(ORIGINAL_WITHDRAW, " " * 8), textwrap.indent(withdraw, " " * 8))]
    if statement:
        pairs.append((STATEMENT, statement_line(statement)))
    return edit_block("ledger/accounts.py", *pairs)


def producer(phase: str, reply: str, **match: Any) -> dict[str, Any]:
    return {"phase": phase, "role": "producer", "title": "overdraft", "reply": reply, **match}


def hotfix_rules(implement: str = GUARDED, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    """The overdraft hotfix's answers; `extra` rules come first (the first match wins)."""
    return [
        *extra,
        producer("diagnose", DIAGNOSIS),
        producer("tests", TESTS),
        producer("implement", withdraw_edit(implement)),
        producer("review", "## Verdict\napprove\n\n## Notes\nRaises before the balance moves.\n"),
        {"phase": "*", "role": "validator", "reply": PASS},
    ]


def add_hotfix(project: Project) -> int:
    # the body's traceback lines would trip run_cli's "no traceback in the output" check
    body = OVERDRAFT_HOTFIX["body"].split("\n\nTraceback", 1)[0]
    return project.add("hotfix", OVERDRAFT_HOTFIX["title"], body)


def rows(project: Project, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(project.root / ".shipline" / "shipline.db") as conn:
        return list(conn.execute(query, args))


def phase_of(detail: dict[str, Any], name: str) -> dict[str, Any]:
    return [p for p in detail["phases"] if p["phase"] == name][-1]


def commit_on_main(project: Project, withdraw: str, message: str) -> None:
    (project.root / "ledger" / "accounts.py").write_text(accounts(withdraw), encoding="utf-8")
    git(project.root, "commit", "-q", "-am", message)


@pytest.mark.slow
def test_approving_a_code_phase_applies_it_judges_it_and_lands_it_or_refuses(
    tmp_path: Path,
) -> None:
    """Merge conflict → fix-ci fails → needs-human; approve while markers remain → refused;
    the human resolves and commits in the worktree → approve → judge → merged, done."""
    rules = hotfix_rules(
        GUARDED,
        {  # review is rejected once, so that main moves on before the ticket merges
            "phase": "review",
            "role": "validator",
            "title": "overdraft",
            "attempt": 1,
            "reply": '{"pass": false, "objections": ["say why the balance is kept"]}',
        },
        producer("fix-ci", file_block("ledger/accounts.py", conflicted(WITH_MARKERS))),
    )
    extra = "\n[phases.review]\nmax_attempts = 1\n[phases.fix-ci]\nmax_attempts = 1\n"
    project = ledger_project(tmp_path / "repo", extra, rules)
    ticket_id = add_hotfix(project)
    project.cli("run")
    assert project.show(ticket_id)["status"] == "needs-human"
    commit_on_main(project, MAIN_MEANWHILE, "withdraw: say the amount")

    # approving the last step queues it: a worker lands it, and the merge conflicts
    out = project.cli("approve", str(ticket_id)).stdout
    assert f"ticket #{ticket_id} is queued: the next worker" in out
    assert "lands the ticket on its target" in out
    assert project.show(ticket_id)["status"] == "queued"  # not done: nothing has landed
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    assert detail["merge"] is None
    assert [p["phase"] for p in detail["phases"]][-2:] == ["review", "fix-ci"]
    assert phase_of(detail, "review")["attempts"][-1]["state"] == "approved by a human"
    fix = phase_of(detail, "fix-ci")
    assert fix["origin"] == "merge" and fix["attempts"][0]["state"] == "rejected"
    marker_objection = "conflict markers remain in ledger/accounts.py: resolve them"
    assert fix["attempts"][0]["verdict"]["objections"] == [marker_objection]
    assert detail["last_objections"] == [marker_objection]
    shown = project.cli("ticket", "show", str(ticket_id)).stdout
    assert "last objection" in shown and marker_objection in shown
    # what fix-ci was handed: both sides of the conflicted file
    handed = project.cli("ticket", "show", str(ticket_id), "--deliverable", "ci.log").stdout
    assert "### ledger/accounts.py on main" in handed
    assert "### ledger/accounts.py on this ticket" in handed

    # approve while the markers remain: refused, and nothing moves
    refused = project.cli("approve", str(ticket_id), expect=2).stderr
    assert "approve refused: conflict markers remain in ledger/accounts.py" in refused
    assert project.show(ticket_id)["status"] == "needs-human"

    # the human resolves it in the ticket's worktree and commits
    worktree = tmp_path / "repo.worktrees" / str(ticket_id)
    (worktree / "ledger" / "accounts.py").write_text(accounts(RESOLVED), encoding="utf-8")
    refused = project.cli("approve", str(ticket_id), expect=2).stderr  # not committed yet
    assert "has uncommitted changes in ledger/accounts.py: commit them" in refused
    git(worktree, "commit", "-q", "-am", "resolve the overdraft conflict")
    resolution = git(worktree, "rev-parse", "HEAD").strip()
    retried = project.cli("retry", str(ticket_id), expect=2).stderr  # it would discard it
    assert f"retry refused: the worktree {worktree}" in retried
    out = project.cli("approve", str(ticket_id)).stdout
    assert f"applies your commit {resolution[:10]}" in out
    ran = project.cli("run").stdout
    assert "approved by a human; applying it and running the judge" in ran
    assert "lost worker" not in ran

    detail = project.show(ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    assert detail["code_applied"] is True
    merge = detail["merge"]
    assert merge["target"] == "main" and merge["url"] is None
    assert (
        f"merged into main at {merge['commit'][:10]}"
        in project.cli("ticket", "show", str(ticket_id)).stdout
    )
    approved = phase_of(detail, "fix-ci")["attempts"][-1]
    assert approved["worker"] == "human" and approved["state"] == "approved by a human"
    # the locked tests run first, before the judge and before the merge's judge
    assert [r["purpose"] for r in approved["judge_runs"]] == ["locked", "judge", "locked", "merge"]
    assert all(r["exit_code"] == 0 for r in approved["judge_runs"])
    assert "judge green (exit 0," in approved["account"]
    # main holds the resolution, judged green, and no deliverable
    assert git(project.root, "rev-parse", "main").strip() == merge["commit"]
    assert git(project.root, "show", "main:ledger/accounts.py") == accounts(RESOLVED)
    assert "test_withdrawing_more_than" in git(project.root, "show", "main:tests/test_overdraft.py")
    landed = git(project.root, "ls-tree", "-r", "--name-only", "main").split()
    assert not [path for path in landed if path.startswith(".shipline/")]
    # the ticket's branch keeps them, on top of what landed
    branch = git(worktree, "rev-parse", "--abbrev-ref", "HEAD").strip()
    kept = git(project.root, "ls-tree", "-r", "--name-only", branch).split()
    assert {f".shipline/{ticket_id}/{name}" for name in ("diagnosis.md", "fix.md")} <= set(kept)
    assert git(project.root, "rev-parse", f"{branch}~1").strip() == merge["commit"]


def test_a_red_base_stops_the_ticket_before_its_first_code_attempt(tmp_path: Path) -> None:
    """Preflight: red main → needs-human with no attempt spent; main fixed → retry → the
    ticket runs, and implement standing with red CI is said so, never "passed"."""
    broken_test = "tests/test_money.py"
    rules = hotfix_rules(
        GUARDED,
        # implement guards withdraw but breaks the statement: CI is red, fix-ci repairs it
        producer("implement", withdraw_edit(GUARDED, "Account ")),
        producer(
            "fix-ci",
            edit_block("ledger/accounts.py", (statement_line("Account "), STATEMENT)),
        ),
    )
    project = ledger_project(tmp_path / "repo", "", rules)
    original = (project.root / broken_test).read_text()
    (project.root / broken_test).write_text(original + "\n\ndef test_broken():\n    assert 0\n")
    git(project.root, "commit", "-q", "-am", "a red test on main")
    ticket_id = add_hotfix(project)
    project.cli("run")

    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    reason = detail["handoff_reason"]
    head = git(project.root, "rev-parse", "main").strip()
    assert reason.startswith(
        f"preflight: the judge is red on main at {head[:10]} before this ticket changed anything"
    )
    assert "no attempt was spent" in reason and f"`shipline retry {ticket_id}`" in reason
    assert "test_broken" in reason  # the excerpt names the failing test
    tests = phase_of(detail, "tests")
    assert (tests["status"], tests["attempts_used"], tests["attempts"]) == ("pending", 0, [])
    assert not [c for c in detail["calls"] if c["phase"] == "tests"]  # no producer was asked
    runs = rows(project, 'SELECT purpose, exit_code, "commit" FROM judge_runs')
    assert runs == [("preflight", 1, head)]

    # the human fixes main; a retry runs preflight again, on the new base
    (project.root / broken_test).write_text(original)
    git(project.root, "commit", "-q", "-am", "fix the red test")
    project.cli("retry", str(ticket_id))
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    purposes = [purpose for (purpose,) in rows(project, "SELECT purpose FROM judge_runs")]
    assert purposes == [
        "preflight",
        "preflight",
        "tests",
        "locked",
        "judge",
        "locked",
        "judge",
        "locked",
        "merge",
    ]
    assert phase_of(detail, "tests")["attempts_used"] == 1

    # implement stood with red CI: the history and `ticket show` say so, never "passed"
    implement = phase_of(detail, "implement")["attempts"][0]
    assert implement["state"] == "accepted with red CI → fix-ci"
    # the locked tests pass first; the whole judge command is red
    assert implement["account"].startswith("checks ok · locked green (exit 0, ")
    assert " · judge red (exit 1, " in implement["account"]
    assert implement["account"].endswith(" · validator passed")
    assert not any(e["message"].startswith("implement attempt 1: passed") for e in detail["events"])
    shown = project.cli("ticket", "show", str(ticket_id)).stdout
    assert "implement #1: accepted with red CI → fix-ci — checks ok · locked green" in shown
    assert "judge red (exit 1," in shown
    # what fix-ci got: the failure excerpt, naming the broken test
    excerpt = project.cli("ticket", "show", str(ticket_id), "--deliverable", "ci.log").stdout
    assert excerpt.startswith("CI is red: `") and "test_statement_names_the_owner" in excerpt
    assert rows(project, "SELECT context FROM steps WHERE phase = 'fix-ci'") == [(excerpt,)]


def test_a_ticket_done_without_a_judge_says_its_code_was_never_applied(tmp_path: Path) -> None:
    """No [judge] command: the code phases are text only. A retried handoff is announced as
    what it is, not as a lost worker's attempt. A deliverable not there is a clear error."""
    rules = hotfix_rules()
    no_validator = [r for r in rules if not (r["role"] == "validator" and r["phase"] == "*")]
    project = ledger_project(tmp_path / "repo", rules=no_validator, judge=False)
    ticket_id = add_hotfix(project)
    # a deliverable the ticket does not have (yet) is a clear error
    err = project.cli("ticket", "show", str(ticket_id), "--deliverable", "ci.log", expect=2)
    assert err.stderr.startswith(f"error: TicketError: ticket #{ticket_id} has no deliverable")
    assert "fix-ci step is handed, and this ticket has none" in err.stderr
    assert "diagnosis.md, tests.md, implementation.md, review.md" in err.stderr
    missing = project.cli("ticket", "show", str(ticket_id), "--deliverable", "tests.md", expect=2)
    assert f"ticket #{ticket_id} has no attempt at tests.md yet" in missing.stderr

    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"  # the validator had no answer for diagnose
    assert phase_of(detail, "diagnose")["attempts"][0]["state"] == "no verdict (handed off)"

    project.write_script(rules)
    project.cli("retry", str(ticket_id))
    ran = project.cli("run").stdout
    assert "diagnose attempt 1: judging again the attempt that was handed to a human" in ran
    assert "lost worker" not in ran
    detail = project.show(ticket_id)
    assert detail["status"] == "done" and detail["code_applied"] is False
    assert detail["merge"] is None
    listed = json.loads(project.cli("ticket", "list", "--json").stdout)
    assert [(t["id"], t["code_applied"]) for t in listed] == [(ticket_id, False)]
    table = project.cli("ticket", "list").stdout
    assert "done (text only)" in table
    shown = project.cli("ticket", "show", str(ticket_id)).stdout
    assert "not applied: the code phases ran text-only" in shown
    # nothing of the ticket reached the repository
    assert "InsufficientFunds(f" not in (project.root / "ledger" / "accounts.py").read_text()


@pytest.mark.parametrize("include", [False, True])
def test_deliverables_stay_on_the_ticket_branch_unless_included(
    tmp_path: Path, include: bool
) -> None:
    """The merge queue lands the code; `.shipline/<id>/` lands only with include_deliverables."""
    from shipline.config import parse_settings
    from shipline.engine.code import CodePath
    from shipline.store.db import open_store

    project = ledger_project(tmp_path / "repo", judge=False)
    settings = parse_settings(
        {"judge": {"command": "true"}, "merge": {"include_deliverables": include}}, "test"
    )
    code = CodePath(
        settings, project.root, open_store("sqlite:///.shipline/s.db", project.root, create=True)
    )
    ws = code.workspace(5, "overdraft")
    (ws.path / "ledger" / "accounts.py").write_text(accounts(GUARDED), encoding="utf-8")
    git(ws.path, "commit", "-q", "-am", "guard withdraw")
    deliverables = {"diagnosis.md": DIAGNOSIS, "review.md": "## Verdict\napprove\n"}
    outcome = code.merge(
        ticket_id=5, title="overdraft", step_id=1, number=1, deliverables=deliverables
    )
    assert outcome.handoff is None and outcome.commit is not None
    assert git(project.root, "rev-parse", "main").strip() == outcome.commit
    on_main = git(project.root, "ls-tree", "-r", "--name-only", "main").split()
    on_branch = git(project.root, "ls-tree", "-r", "--name-only", ws.branch).split()
    wanted = {".shipline/5/diagnosis.md", ".shipline/5/review.md"}
    assert wanted <= set(on_branch)
    assert (wanted <= set(on_main)) is include
    assert include or not [path for path in on_main if path.startswith(".shipline/")]
    assert "ledger/accounts.py" in on_main
    assert "InsufficientFunds(f" in git(project.root, "show", "main:ledger/accounts.py")
