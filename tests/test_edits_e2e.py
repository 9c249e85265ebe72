"""Edits end to end, through the real CLI on the second repository (ledger): a hotfix whose
implement changes ledger/accounts.py with SEARCH/REPLACE blocks, strictly applied."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, git
from second_repo import FILES, OVERDRAFT_HOTFIX, ledger_project
from shipline import api
from shipline.engine.project import open_project

TITLE = OVERDRAFT_HOTFIX["title"]

DIAGNOSIS = """\
## Reproduction
    >>> account = Account("ada", 100); account.withdraw(500); account.balance
    -400

## Root cause
`Account.withdraw` in ledger/accounts.py subtracts without comparing with the balance.

## Fix plan
Raise `InsufficientFunds` in `withdraw` when `cents` exceeds the balance, before subtracting.

## Regression test
tests/test_overdraft.py: withdrawing 500 from 100 raises and leaves the balance at 100.
"""

TESTS = """\
### File: tests/test_overdraft.py
```python
import pytest

from ledger.accounts import Account, InsufficientFunds


def test_an_overdraft_raises_and_keeps_the_balance():
    account = Account("ada", 100)
    with pytest.raises(InsufficientFunds):
        account.withdraw(500)
    assert account.balance == 100


def test_the_whole_balance_may_be_withdrawn():
    account = Account("ada", 100)
    account.withdraw(100)
    assert account.balance == 0
```
"""

OLD = """\
            raise ValueError("a withdrawal must be positive")
        self.balance -= cents
"""
NEW = """\
            raise ValueError("a withdrawal must be positive")
        if cents > self.balance:
            raise InsufficientFunds(f"{self.owner} cannot withdraw {cents} from {self.balance}")
        self.balance -= cents
"""


def edit(*blocks: tuple[str, str]) -> str:
    body = "".join(f"<<<<<<< SEARCH\n{s}=======\n{r}>>>>>>> REPLACE\n" for s, r in blocks)
    return f"### Edit: ledger/accounts.py\n```python\n{body}```\n"


ACCOUNTS = textwrap.dedent(FILES["ledger/accounts.py"]).lstrip("\n")
FIXED = ACCOUNTS.replace(OLD, NEW)
assert FIXED != ACCOUNTS

# attempt 1: the whole file, rewritten (the fix is right, the format is refused)
WHOLE = f"### File: ledger/accounts.py\n```python\n{FIXED}```\n"
# attempt 2: block 1 matches, block 2 does not (the model misremembers the code)
MISMATCH = edit(
    ('"""An account holds a balance in cents."""\n', '"""An account: a balance in cents."""\n'),
    ("        self.balance = self.balance - cents\n", "        raise InsufficientFunds\n"),
)
FIX = edit((OLD, NEW))


def show(project: Project, ticket_id: int) -> dict[str, Any]:
    """`ticket show --json`, read through the api: the ticket's body quotes a traceback, which
    `run_cli` would take for a crash of the CLI (so the ticket is added without --json too)."""
    opened = open_project(project.root, db=project.db_url)
    try:
        return api.ticket_detail(opened.store, ticket_id).model_dump(mode="json")
    finally:
        opened.close()


def producer(phase: str, reply: str, **match: Any) -> dict[str, Any]:
    return {"phase": phase, "role": "producer", "title": "withdraw", "reply": reply, **match}


RULES = [
    producer("diagnose", DIAGNOSIS),
    producer("tests", TESTS),
    producer("implement", WHOLE, attempt=1),
    producer("implement", MISMATCH, attempt=2),
    producer("implement", FIX),
    producer("review", "## Verdict\napprove\n\n## Notes\nThe balance is checked first.\n"),
    {"phase": "*", "role": "validator", "reply": '{"pass": true, "objections": []}'},
]


@pytest.mark.slow
def test_an_implement_edit_applies_strictly_or_not_at_all_and_merges(tmp_path: Path) -> None:
    project = ledger_project(tmp_path / "ledger", "\n[phases.implement]\nmax_attempts = 2\n", RULES)
    kind, body = OVERDRAFT_HOTFIX["kind"], OVERDRAFT_HOTFIX["body"]
    added = project.cli("ticket", "add", "--kind", kind, "--title", TITLE, "--body", body)
    ticket_id = int(re.search(r"added ticket #(\d+)", added.stdout).group(1))  # type: ignore[union-attr]
    project.cli("run")

    detail = show(project, ticket_id)
    assert detail["status"] == "needs-human"
    implement = next(p for p in detail["phases"] if p["phase"] == "implement")["attempts"]
    # a whole-file block on an existing file is refused
    assert implement[0]["verdict"]["objections"] == [
        "implementation.md cannot be applied, nothing was written: ledger/accounts.py exists: "
        "edit it with SEARCH/REPLACE blocks (### Edit: ledger/accounts.py); whole-file blocks "
        "are for new files"
    ]
    # a SEARCH that does not match names its block, and the block that matched is not written
    assert implement[1]["verdict"]["objections"] == [
        "implementation.md cannot be applied, nothing was written: ledger/accounts.py edit "
        "block 2 (SEARCH starting 'self.balance = self.balance - cents'): not found in the "
        "file as blocks 1–1 left it: copy the lines exactly, whole lines with their indentation"
    ]
    (workspace,) = json.loads(project.cli("workspaces", "--json").stdout)["workspaces"]
    worktree = Path(workspace["path"])
    assert (worktree / "ledger" / "accounts.py").read_text() == ACCOUNTS
    assert git(worktree, "status", "--porcelain", "--", "ledger") == ""

    # the next attempt, whose edit matches, is judged green and merged
    project.cli("retry", str(ticket_id), "--attempts", "1")
    project.cli("run")
    detail = show(project, ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    assert detail["merge"]["target"] == "main"
    log = git(project.root, "log", "--format=%s", "main").splitlines()
    assert log == [f"shipline #{ticket_id}: {TITLE}", "ledger 0.3.0"]
    # main has the change and every other line of ledger/accounts.py as it was
    assert git(project.root, "show", "main:ledger/accounts.py") == FIXED
    diff = git(project.root, "diff", "main~1", "main", "--", "ledger/accounts.py")
    changed = [
        line
        for line in diff.splitlines()
        if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
    ]
    assert changed == [
        "+        if cents > self.balance:",
        '+            raise InsufficientFunds(f"{self.owner} cannot withdraw {cents} from '
        '{self.balance}")',
    ]
