"""Repository context: the map of a real repository, its ranking, the budget cut, and what a
hotfix's prompts see of the code, end to end through the CLI on the ledger repository."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, git
from second_repo import FILES, OVERDRAFT_HOTFIX, ledger_project, write_ledger_repo
from shipline.context.cache import TagCache, forget
from shipline.context.fit import MAP_HEADING, Candidates, SourceFile, fit
from shipline.context.repository import Revision, gather, nearby_tests
from shipline.context.tags import parse_tags
from shipline.providers.base import estimate_tokens
from shipline.workspaces.git import Git


def ledger_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    write_ledger_repo(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ledger")
    return root


def candidates(
    root: Path, ticket: str, kind: Any = "map", inputs: dict[str, str] | None = None
) -> Candidates:
    cache = TagCache(root / ".shipline" / "context" / "tags.json")
    return gather(kind, Git(root), [Revision("main", "main")], cache, ticket, inputs or {})


def source(path: str) -> str:
    return textwrap.dedent(FILES[path]).lstrip("\n")


def test_the_map_lists_python_javascript_and_go_symbols_with_signatures(tmp_path: Path) -> None:
    found = candidates(ledger_repo(tmp_path / "ledger"), "anything")
    text = fit(found, 2000, estimate_tokens).text + "\n"
    assert text.startswith("# Repository context: main at ")
    assert MAP_HEADING in text
    for line in [
        "ledger/accounts.py:",
        "  class InsufficientFunds(Exception)",
        "  class Account",
        "    def withdraw(self, cents: int) -> None",
        "    def __init__(self, owner: str, balance: int = 0) -> None",
        "  def total(accounts: list[Account]) -> int",
        "  def parse_amount(text: str) -> int",
        "web/format.js:",
        "  function formatCents(cents)",
        "  class Ticker",
        "    render()",
        "tools/audit.go:",
        "  type Balance struct",
        "    func (b Balance) Overdrawn() bool",
        "  func main()",
    ]:
        assert f"\n{line}\n" in text, line


def test_a_ticket_naming_a_method_ranks_the_file_that_defines_it_first(tmp_path: Path) -> None:
    root = ledger_repo(tmp_path / "ledger")

    def order(ticket: str) -> list[str]:
        return [path for path, _ in candidates(root, ticket).ranked]

    withdraw = order("withdraw lets the balance go below zero")
    assert withdraw.index("ledger/accounts.py") < withdraw.index("ledger/report.py")
    assert withdraw[0] == "ledger/accounts.py"
    summary = order("summary prints the total twice")
    assert summary.index("ledger/report.py") < summary.index("ledger/accounts.py")


def test_a_second_build_reads_every_file_s_tags_from_the_cache(tmp_path: Path) -> None:
    root = ledger_repo(tmp_path / "ledger")
    path = root / ".shipline" / "context" / "tags.json"
    first, second = TagCache(path), TagCache(path)
    forget()  # nothing in this process's memory: the first build parses every file
    gather("map", Git(root), [Revision("main", "main")], first, "x", {})
    forget()  # … and the second reads them from the file
    gather("map", Git(root), [Revision("main", "main")], second, "x", {})
    assert first.misses == 8 and first.hits == 0  # the Python, JavaScript and Go files
    assert second.hits == 8 and second.misses == 0


def test_a_folder_without_git_or_without_a_commit_has_an_empty_context(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.py").write_text("def f(): pass\n")
    assert candidates(plain, "f").reason == "not a git repository"
    git(plain, "init", "-q", "-b", "main")
    empty = candidates(plain, "f")
    assert empty.reason == "the repository has no commit yet"
    fitted = fit(empty, 1000, estimate_tokens)
    assert fitted.text == "" and fitted.record["reason"] == empty.reason


def test_blobs_come_back_byte_for_byte_and_a_binary_file_is_never_shown(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    latin = "caf\u00e9 = 1\n".encode("latin-1")  # not UTF-8
    binary = bytes(range(256)) * 4
    (root / "legacy.py").write_bytes(latin)
    (root / "logo.png").write_bytes(binary)
    (root / "app.py").write_text("def run():\n    pass\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "files")
    entries = {entry.path: entry for entry in Git(root).tree("main")}
    assert set(entries) == {"app.py", "legacy.py", "logo.png"}
    assert entries["logo.png"].size == len(binary)
    blobs = Git(root).blobs([entries["legacy.py"].sha, entries["logo.png"].sha])
    assert blobs == {entries["legacy.py"].sha: latin, entries["logo.png"].sha: binary}
    found = candidates(root, "run breaks on logo.png and legacy.py", kind="named")
    assert set(found.missing) == {"legacy.py", "logo.png"} and found.files == ()
    fitted = fit(found, 1000, estimate_tokens)
    assert "<source" not in fitted.text and set(fitted.record["cut"]) == set(found.missing)
    assert "[cut: logo.png is not shown: not UTF-8 text, or over 256 KiB]" in fitted.text


def test_the_budget_cut_is_reported_and_never_cuts_a_file_in_the_middle() -> None:
    body = "    y = x * 2\n    z = y - 1\n    if z > 10:\n        z = 10\n"
    big = "\n".join(f"def step_{n}(x):\n{body}    return z + {n}\n" for n in range(20))
    small = source("ledger/money.py")
    big_tags = parse_tags("ledger/big.py", big.encode())
    files = (
        SourceFile("ledger/money.py", small, parse_tags("ledger/money.py", small.encode())),
        SourceFile("ledger/big.py", big, big_tags),
    )
    ranked = tuple(
        (f"pkg/module_{n}.py", parse_tags("m.py", f"def f_{n}(a, b):\n    pass\n".encode()))
        for n in range(40)
    )
    wanted = Candidates("main at 0123456789", files, ranked)

    roomy = fit(wanted, 4000, estimate_tokens)
    assert f'<source path="ledger/big.py">\n{big.rstrip()}\n</source>' in roomy.text
    assert roomy.record["cut"] == [] and roomy.record["map"]["left_out"] == 0

    tight = fit(wanted, 500, estimate_tokens)
    assert estimate_tokens(tight.text) <= 500
    assert f'<source path="ledger/money.py">\n{small.rstrip()}\n</source>' in tight.text
    assert '<source path="ledger/big.py" cut="outline">\n[cut: ledger/big.py is about' in tight.text
    assert "    return z + 1" not in tight.text  # the outline, not a part of the body
    assert "  def step_19(x)\n</source>" in tight.text  # … and all of it
    assert [(f["path"], f["mode"]) for f in tight.record["files"]] == [
        ("ledger/money.py", "whole"),
        ("ledger/big.py", "outline"),
    ]
    assert tight.record["cut"] == ["ledger/big.py"]
    left_out = tight.record["map"]["left_out"]
    assert (
        left_out > 0 and f"[cut: {left_out} lower-ranked files of the map left out]" in tight.text
    )
    for n in range(40 - left_out):  # the best ranked are listed, each with all its symbols
        assert f"pkg/module_{n}.py:\n  def f_{n}(a, b)\n" in tight.text + "\n"

    tiny = fit(wanted, 120, estimate_tokens)
    assert estimate_tokens(tiny.text) <= 120
    assert "[cut: ledger/big.py (about" in tiny.text
    assert "ledger/big.py" in tiny.record["cut"]
    assert "def step_" not in tiny.text


def test_repository_context_fills_only_the_room_the_deliverables_leave() -> None:
    from shipline.engine.loop import TicketView
    from shipline.engine.prompt import build_prompt
    from shipline.phases import get_phase

    ranked = tuple(
        (path, parse_tags(path, source(path).encode()))
        for path in ("ledger/accounts.py", "ledger/report.py", "ledger/money.py", "web/format.js")
    )
    accounts = SourceFile("ledger/accounts.py", source("ledger/accounts.py"), ranked[0][1])
    wanted = Candidates("main at 0123456789", (accounts,), ranked)
    phase = get_phase("implement")
    plan = "## Steps\n" + "".join(f"{n}. Check the balance, case {n}.\n" for n in range(1, 40))
    variables = {
        "ticket": TicketView(1, "feature", "Overdraft", "withdraw allows it", 2, False),
        "inputs": {"plan.md": plan},
        "history": [],
        "note": None,
        "deliverable": phase.deliverable,
        "phase": phase,
    }
    alone = build_prompt(phase, variables, 100_000)
    roomy = build_prompt(phase, variables, 3000, lambda: wanted, 1500)
    assert not roomy.truncated and roomy.tokens <= 3000
    assert roomy.context is not None and roomy.context["files"][0]["mode"] == "whole"
    assert roomy.tokens - alone.tokens <= 1500 and plan.strip() in roomy.messages[1].content

    snug = build_prompt(phase, variables, alone.tokens + 150, lambda: wanted, 1500)
    assert not snug.truncated and snug.tokens <= alone.tokens + 150
    assert plan.strip() in snug.messages[1].content  # the plan is whole: the context gave way
    assert snug.context is not None and snug.context["cut"] == ["ledger/accounts.py"]

    over = build_prompt(phase, variables, alone.tokens - 100, lambda: wanted, 1500)
    assert over.truncated and "# Repository context" not in over.messages[1].content
    assert over.context is not None and over.context["reason"] == "no room left in the token budget"


def test_tests_near_a_file_are_its_tests_in_its_own_language() -> None:
    paths = [
        "ledger/accounts.py",
        "tests/test_accounts.py",
        "tests/test_accounts_overdraft.py",
        "tests/test_money.py",
        "web/accounts.test.js",
        "tools/audit.go",
        "tools/audit_test.go",
    ]
    assert nearby_tests("ledger/accounts.py", paths) == [
        "tests/test_accounts.py",
        "tests/test_accounts_overdraft.py",
    ]
    assert nearby_tests("tools/audit.go", paths) == ["tools/audit_test.go"]
    assert nearby_tests("tests/test_money.py", paths) == []


# -- end to end: the overdraft hotfix on the ledger repository -------------------------------

GUARD = '            raise ValueError("a withdrawal must be positive")\n'
CHECK = (
    "        if cents > self.balance:\n"
    '            raise InsufficientFunds(f"{self.owner} has {self.balance}, not {cents}")\n'
)
ACCOUNTS_FIXED = source("ledger/accounts.py").replace(GUARD, GUARD + CHECK)
# implement changes the existing module with an edit (docs/phases.md, Edits)
ACCOUNTS_EDIT = (
    f"### Edit: ledger/accounts.py\n```python\n<<<<<<< SEARCH\n{GUARD}=======\n"
    f"{GUARD}{CHECK}>>>>>>> REPLACE\n```\n"
)
HOTFIX_RULES: list[dict[str, Any]] = [
    {
        "phase": "diagnose",
        "role": "producer",
        "reply": (
            "## Reproduction\n"
            "`Account('ada', 100).withdraw(500)` leaves `balance == -400`; expected\n"
            "`InsufficientFunds` and the balance still 100.\n\n"
            "## Root cause\n"
            "`Account.withdraw` in ledger/accounts.py only refuses amounts <= 0: it never\n"
            "compares the amount with the balance.\n\n"
            "## Fix plan\n"
            "In ledger/accounts.py, `Account.withdraw` raises `InsufficientFunds` when `cents`\n"
            "is more than `self.balance`, before changing it.\n\n"
            "## Regression test\n"
            "tests/test_overdraft.py: `test_withdrawing_more_than_the_balance_raises` asserts\n"
            "the exception and the unchanged balance.\n"
        ),
    },
    {
        "phase": "tests",
        "role": "producer",
        "reply": (
            "### File: tests/test_overdraft.py\n```python\nimport pytest\n\n"
            "from ledger.accounts import Account, InsufficientFunds\n\n\n"
            "def test_withdrawing_more_than_the_balance_raises():\n"
            "    account = Account('ada', 100)\n"
            "    with pytest.raises(InsufficientFunds):\n"
            "        account.withdraw(500)\n"
            "    assert account.balance == 100\n```\n"
        ),
    },
    {
        "phase": "implement",
        "role": "producer",
        "reply": ACCOUNTS_EDIT,
    },
    {
        "phase": "review",
        "role": "producer",
        "reply": "## Verdict\napprove\n\n## Notes\nThe check sits in withdraw, as planned.\n",
    },
    {"phase": "*", "role": "validator", "reply": '{"pass": true, "objections": []}'},
]


def stored_prompt(project: Project, ticket_id: int, phase: str) -> tuple[str, dict[str, Any]]:
    """The prompt of the phase's first attempt, as stored, and its context record."""
    from sqlalchemy import select

    from shipline.engine.project import open_project
    from shipline.store import models as m

    opened = open_project(project.root, db=project.db_url)
    try:
        with opened.store.session() as session:
            row = (
                session.execute(
                    select(m.Attempt)
                    .join(m.Step)
                    .where(m.Step.ticket_id == ticket_id, m.Step.phase == phase)
                    .order_by(m.Attempt.number)
                )
                .scalars()
                .first()
            )
            assert row is not None and row.context is not None
            return "\n".join(msg["content"] for msg in row.prompt), dict(row.context)
    finally:
        opened.store.close()


def detail_json(project: Project, ticket_id: int) -> dict[str, Any]:
    """What `ticket show --json` prints, built in-process: the hotfix's body holds a traceback,
    which `run_cli` refuses to see in any output (tests/conftest.py)."""
    from shipline.api.tickets import ticket_detail
    from shipline.engine.project import open_project

    opened = open_project(project.root, db=project.db_url)
    try:
        return dict(ticket_detail(opened.store, ticket_id).model_dump(mode="json"))
    finally:
        opened.store.close()


@pytest.mark.slow
def test_a_hotfix_sees_the_code_its_traceback_and_its_diagnosis_name(tmp_path: Path) -> None:
    project = ledger_project(tmp_path / "ledger", rules=HOTFIX_RULES)
    hotfix = OVERDRAFT_HOTFIX
    project.cli(
        "ticket", "add", "--kind", "hotfix", "--title", hotfix["title"], "--body", hotfix["body"]
    )
    ticket_id = 1
    project.cli("run")
    detail = detail_json(project, ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]

    accounts = source("ledger/accounts.py").rstrip()
    diagnose, record = stored_prompt(project, ticket_id, "diagnose")
    assert "# Repository context: main at " in diagnose
    assert f'<source path="ledger/accounts.py">\n{accounts}\n</source>' in diagnose
    assert MAP_HEADING in diagnose and "  func main()" in diagnose
    assert record["files"][0]["path"] == "ledger/accounts.py"  # the innermost frame ranks first
    assert {f["path"] for f in record["files"]} == {"ledger/accounts.py", "ledger/report.py"}

    implement, record = stored_prompt(project, ticket_id, "implement")
    assert "# Repository context: the ticket's worktree at " in implement
    assert f'<source path="ledger/accounts.py">\n{accounts}\n</source>' in implement
    tests = source("tests/test_accounts.py").rstrip()
    assert f'<source path="tests/test_accounts.py">\n{tests}\n</source>' in implement
    assert '<source path="tests/test_overdraft.py">' not in implement  # already in tests.md
    assert [f["path"] for f in record["files"]] == ["ledger/accounts.py", "tests/test_accounts.py"]

    shown = project.cli("ticket", "show", str(ticket_id)).stdout
    line = next(x for x in shown.splitlines() if "context: the ticket's worktree" in x)
    assert "map " in line and " symbols/" in line
    assert "files ledger/accounts.py (" in line and "tests/test_accounts.py (" in line
    implement_view = next(p for p in detail["phases"] if p["phase"] == "implement")
    context = implement_view["attempts"][0]["context"]
    assert context["source"].startswith("the ticket's worktree at ")
    assert context["map"]["symbols"] > 0 and context["tokens"] <= context["room"]
    review = next(p for p in detail["phases"] if p["phase"] == "review")
    assert review["attempts"][0]["context"] is None  # review declares no repository context
    assert json.loads(json.dumps(detail)) == detail  # plain JSON, as --json prints it
