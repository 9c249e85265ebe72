"""Locked tests can't be dodged: the tests phase locks its tests' files, their pytest ids and the
test configuration that could deselect them; after implement the locked tests run first and
every locked id must be in the JUnit report, passed; `shipline tests unlock` lifts a wrong lock.

Unit tables first (which configuration is locked, how a JUnit report is read and proven),
then the code path on the ledger repository (tests/second_repo.py), where implement attempts
try every dodge we know against the OVERDRAFT_HOTFIX ticket and only the honest one merges.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, git
from second_repo import OVERDRAFT_HOTFIX, ledger_project
from shipline.judge.proof import (
    MISSING,
    ReportCase,
    ReportError,
    discover_test_ids,
    ids_at_lock,
    junit_env,
    prove,
    read_junit,
)
from shipline.process import run_command
from shipline.workspaces.testconfig import (
    ABSENT,
    changed_config,
    config_digest,
    config_paths,
    describe,
    lock_config,
)
from test_workspaces_e2e import PYTEST, attempts, main_log, rows

# --- which test configuration is locked ---------------------------------------------------------

PYTHON_AT = [
    "conftest.py",
    "pytest.ini",
    ".pytest.ini",
    "pytest.toml",
    ".pytest.toml",
    "tox.ini",
    "setup.cfg",
    "pyproject.toml",
]


@pytest.mark.parametrize(
    ("tests", "tracked", "locked"),
    [
        (  # pytest: every config name in the root and each directory above the test
            ["tests/unit/test_x.py"],
            [],
            sorted(f"{d}{n}" for d in ("", "tests/", "tests/unit/") for n in PYTHON_AT),
        ),
        (  # and every conftest.py the repository tracks, wherever it is
            ["test_x.py"],
            ["docs/conftest.py", "src/pkg/conftest.py", "src/pkg/mod.py"],
            sorted([*PYTHON_AT, "docs/conftest.py", "src/pkg/conftest.py"]),
        ),
        (  # jest / vitest: their config files (globs) and package.json, root and above the test
            ["web/format.test.js"],
            ["docs/conftest.py"],
            sorted(
                f"{d}{n}"
                for d in ("", "web/")
                for n in (
                    "package.json",
                    "jest.config.*",
                    "vitest.config.*",
                    "vitest.workspace.*",
                    "vite.config.*",
                )
            ),
        ),
        (["tools/audit_test.go"], [], ["tools/*_test.go"]),  # go: the package's test files
        (["tests/fixtures.json"], ["conftest.py"], []),  # not a test runner's file
    ],
)
def test_the_config_lock_covers_what_can_deselect_the_locked_tests(
    tests: list[str], tracked: list[str], locked: list[str]
) -> None:
    assert config_paths(tests, tracked) == locked


PYPROJECT = """\
[project]
name = "ledger"
version = "0.3.0"

[tool.pytest.ini_options]
testpaths = ["tests"]
"""


@pytest.mark.parametrize(
    ("name", "before", "after", "changed"),
    [
        # pyproject.toml: only the [tool.pytest] table is locked
        ("pyproject.toml", PYPROJECT, PYPROJECT.replace("0.3.0", "0.3.1"), False),
        ("pyproject.toml", PYPROJECT, PYPROJECT + "\n[tool.ruff]\nline-length = 99\n", False),
        (
            "pyproject.toml",
            PYPROJECT,
            PYPROJECT.replace('["tests"]', '["tests"]\naddopts = "-k \'not overdraft\'"'),
            True,
        ),
        ("pyproject.toml", PYPROJECT, PYPROJECT + '\n[tool.pytest]\nminversion = "9"\n', True),
        ("pyproject.toml", None, '[project]\nname = "x"\n', False),  # no pytest table: allowed
        ("pyproject.toml", None, "[tool.pytest.ini_options]\naddopts = '-x'\n", True),
        ("pyproject.toml", PYPROJECT, "[tool.pytest.ini_options\nbroken", True),
        # tox.ini and setup.cfg: only their pytest sections
        ("tox.ini", None, "[tox]\nenvlist = py311\n", False),
        ("tox.ini", None, "[pytest]\naddopts = -k 'not overdraft'\n", True),
        ("tox.ini", "[tox]\n[pytest]\nx = 1\n", "[tox]\nenvlist = a\n[pytest]\nx = 1\n", False),
        ("tox.ini", "[tox]\n[pytest]\nx = 1\n", "[tox]\n[pytest]\nx = 2\n", True),
        ("setup.cfg", "[metadata]\nname = a\n", "[metadata]\nname = b\n", False),
        ("setup.cfg", "[metadata]\nname = a\n", "[metadata]\n[tool:pytest]\naddopts = -q\n", True),
        # whole files: conftest.py, pytest.ini (present, even empty, it is the inifile)
        ("conftest.py", None, 'collect_ignore = ["tests/test_overdraft.py"]\n', True),
        ("conftest.py", "import pytest\n", "import pytest\n\n", True),
        ("pytest.ini", None, "", True),
        ("pytest.ini", "[pytest]\n", "[pytest]\n", False),
        # package.json: the jest key and scripts.test
        ("package.json", '{"name": "a"}', '{"name": "b", "scripts": {"lint": "x"}}', False),
        ("package.json", '{"name": "a"}', '{"name": "a", "scripts": {"test": "jest -t x"}}', True),
        ("package.json", '{"jest": {"a": 1}}', '{"jest": {"a": 2}}', True),
        ("package.json", '{"jest": {"a": 1}}', "not json", True),
    ],
)
def test_a_config_file_is_locked_by_the_part_that_decides_which_tests_run(
    name: str, before: str | None, after: str, changed: bool
) -> None:
    old = None if before is None else before.encode()
    assert (config_digest(name, old) != config_digest(name, after.encode())) == changed


def test_a_missing_file_or_section_is_locked_as_absent_and_globs_lock_names_and_content(
    tmp_path: Path,
) -> None:
    (tmp_path / "tools").mkdir()
    (tmp_path / "tools" / "audit_test.go").write_text("package main\n")
    (tmp_path / "tox.ini").write_text("[tox]\n")
    paths = ["conftest.py", "tox.ini", "tools/*_test.go", "jest.config.*"]
    locked = lock_config(tmp_path, paths)
    assert [locked[p] == ABSENT for p in paths] == [True, True, False, True]
    assert changed_config(tmp_path, locked) == []
    (tmp_path / "tools" / "main_test.go").write_text("func TestMain(m *testing.M) {}\n")
    (tmp_path / "jest.config.js").write_text("module.exports = {testPathIgnorePatterns: []}\n")
    (tmp_path / "conftest.py").symlink_to("/etc/hostname")  # out of the worktree: a change
    assert changed_config(tmp_path, locked) == ["conftest.py", "jest.config.*", "tools/*_test.go"]
    assert describe("tools/*_test.go").startswith("tools/*_test.go (the test files of Go package")
    assert describe("pyproject.toml") == "pyproject.toml [tool.pytest]"


# --- reading and proving a JUnit report ---------------------------------------------------------

CASES_SOURCE = """\
import pytest


def test_ok():
    pass


def test_fails():
    assert 1 == 2


@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    pass


@pytest.mark.skip(reason="later")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known")
def test_xfailed():
    assert 0


class TestGroup:
    def test_method(self):
        pass

    class TestInner:
        def test_deep(self):
            pass


@pytest.fixture
def broken():
    raise RuntimeError("fixture")


def test_errors(broken):
    pass


def helper():
    pass
"""


def run_pytest(root: Path, files: dict[str, str], args: str = "") -> list[ReportCase]:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    report = root / "report.xml"
    run_command(f"{PYTEST} {args}", root, 60, junit_env(report))
    return read_junit(report)


def test_a_real_pytest_report_gives_each_test_its_node_id_and_outcome(tmp_path: Path) -> None:
    path = "tests/test_cases.py"
    cases = run_pytest(tmp_path, {path: CASES_SOURCE})
    outcomes = {case.name: case.outcome for case in cases}
    assert outcomes == {
        "test_ok": "passed",
        "test_fails": "failed",
        "test_param[1]": "passed",
        "test_param[2]": "passed",
        "test_skipped": "skipped",
        "test_xfailed": "xfailed",
        "test_method": "passed",
        "test_deep": "passed",
        "test_errors": "error",
    }
    ids = ids_at_lock(cases, {path: CASES_SOURCE})[path]
    # skipped and xfailed tests are not locked: they never ran at lock time
    assert ids == [
        f"{path}::test_ok",
        f"{path}::test_fails",
        f"{path}::test_param[1]",
        f"{path}::test_param[2]",
        f"{path}::TestGroup::test_method",
        f"{path}::TestGroup::TestInner::test_deep",
        f"{path}::test_errors",
    ]
    # the source alone names the same tests, without their parameters
    assert discover_test_ids(path, CASES_SOURCE) == [
        f"{path}::test_ok",
        f"{path}::test_fails",
        f"{path}::test_param",
        f"{path}::test_skipped",
        f"{path}::test_xfailed",
        f"{path}::TestGroup::test_method",
        f"{path}::TestGroup::TestInner::test_deep",
        f"{path}::test_errors",
    ]
    fates = {u.test_id: (u.what, u.ran) for u in prove({path: ids}, cases)}
    assert fates == {
        f"{path}::test_fails": ("failed (assert 1 == 2)", True),
        f"{path}::test_errors": ('error (failed on setup with "RuntimeError: fixture")', True),
    }


def test_a_file_that_did_not_collect_at_lock_time_is_locked_by_the_tests_it_defines(
    tmp_path: Path,
) -> None:
    """A new test that imports what the ticket has yet to write stops pytest at collection:
    the run reports the file, not its tests, so their ids come from its source."""
    source = "from ledger.overdraft import guard\n\n\ndef test_guard():\n    assert guard(1)\n"
    cases = run_pytest(tmp_path, {"tests/test_guard.py": source})
    assert [(c.classname, c.name, c.outcome) for c in cases] == [("", "tests.test_guard", "error")]
    assert ids_at_lock(cases, {"tests/test_guard.py": source}) == {
        "tests/test_guard.py": ["tests/test_guard.py::test_guard"]
    }


@pytest.mark.parametrize(
    ("after", "fate"),
    [
        ("def test_renamed():\n    pass\n", f"missing from the report: {MISSING}"),
        (
            "import pytest\n\n\n@pytest.mark.skip(reason='later')\ndef test_a():\n    pass\n",
            "skipped (later)",
        ),
        (
            "import pytest\npytest.skip('off', allow_module_level=True)\n\ndef test_a():\n"
            "    pass\n",
            "its file did not run: skipped (collection skipped)",
        ),
        ("def test_a():\n    pass\n\n\ndef test_b():\n    pass\n", None),
    ],
)
def test_a_locked_id_that_did_not_run_and_pass_is_named_with_what_happened_to_it(
    tmp_path: Path, after: str, fate: str | None
) -> None:
    cases = run_pytest(tmp_path, {"tests/test_a.py": after})
    unproven = prove({"tests/test_a.py": ["tests/test_a.py::test_a"]}, cases)
    assert [(u.test_id, u.what, u.ran) for u in unproven] == (
        [] if fate is None else [("tests/test_a.py::test_a", fate, False)]
    )


def test_a_command_run_in_a_subdirectory_still_maps_to_the_repository_paths(
    tmp_path: Path,
) -> None:
    (tmp_path / "svc").mkdir()
    cases = run_pytest(
        tmp_path / "svc", {"pytest.ini": "[pytest]\n", "tests/test_a.py": "def test_a(): pass\n"}
    )
    assert prove({"svc/tests/test_a.py": ["svc/tests/test_a.py::test_a"]}, cases) == []


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "no JUnit report was written"),
        ("<testsuites><testcase", "is not well-formed XML"),
        (
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><testsuites>&a;</testsuites>',
            "declares a DTD",
        ),
    ],
)
def test_a_missing_or_hostile_report_is_a_clear_error(
    tmp_path: Path, content: str | None, error: str
) -> None:
    report = tmp_path / "r.xml"
    if content is not None:
        report.write_text(content)
    with pytest.raises(ReportError, match=error):
        read_junit(report)


def test_the_report_env_keeps_the_callers_pytest_options() -> None:
    env = junit_env(Path("/r/x.xml"), ["tests/a b.py"], {"PYTEST_ADDOPTS": "-x", "HOME": "/h"})
    assert env == {"HOME": "/h", "PYTEST_ADDOPTS": "-x --junitxml=/r/x.xml 'tests/a b.py'"}


# --- the code path on the ledger repository: every dodge is refused, the honest fix merges -----

DIAGNOSIS = """\
## Reproduction
    $ python -c "from ledger import Account; a = Account('ada', 100); a.withdraw(500)"
    (no error: the balance is now -400)

## Root cause
`Account.withdraw` in ledger/accounts.py subtracts any positive amount without comparing it
with the balance.

## Fix plan
In `Account.withdraw`, raise `InsufficientFunds` when `cents > self.balance`, before the
balance changes.

## Regression test
tests/test_overdraft.py: `test_withdraw_refuses_an_overdraft` and
`test_withdraw_within_the_balance_still_works`.
"""

OVERDRAFT_TEST = """\
import pytest

from ledger.accounts import Account, InsufficientFunds


def test_withdraw_refuses_an_overdraft():
    account = Account("ada", 100)
    with pytest.raises(InsufficientFunds):
        account.withdraw(500)
    assert account.balance == 100


def test_withdraw_within_the_balance_still_works():
    account = Account("ada", 100)
    account.withdraw(40)
    assert account.balance == 60
"""

LOCKED_IDS = [
    "tests/test_overdraft.py::test_withdraw_refuses_an_overdraft",
    "tests/test_overdraft.py::test_withdraw_within_the_balance_still_works",
]


def file_block(path: str, content: str) -> str:
    lang = "python" if path.endswith(".py") else "toml" if path.endswith(".toml") else ""
    return f"### File: {path}\n```{lang}\n{content}```\n"


def accounts(withdraw_body: str, header: str = "") -> str:
    """ledger/accounts.py with `withdraw`'s body replaced (indented 8 spaces)."""
    body = textwrap.indent(textwrap.dedent(withdraw_body).strip("\n"), " " * 8)
    return (
        f'"""An account holds a balance in cents."""\n\n{header}'
        "from ledger.money import format_cents\n\n\n"
        "class InsufficientFunds(Exception):\n    pass\n\n\n"
        "class Account:\n"
        "    def __init__(self, owner: str, balance: int = 0) -> None:\n"
        "        self.owner = owner\n        self.balance = balance\n\n"
        "    def deposit(self, cents: int) -> None:\n"
        "        if cents <= 0:\n"
        '            raise ValueError("a deposit must be positive")\n'
        "        self.balance += cents\n\n"
        "    def withdraw(self, cents: int) -> None:\n"
        f"{body}\n\n"
        "    def statement(self) -> str:\n"
        '        return f"{self.owner}: {format_cents(self.balance)}"\n'
    )


HONEST = accounts(
    """
    if cents <= 0:
        raise ValueError("a withdrawal must be positive")
    if cents > self.balance:
        raise InsufficientFunds(f"{self.owner} has {self.balance}, not {cents}")
    self.balance -= cents
    """
)
# raises, but not what the test expects: the locked tests go red
WRONG_EXCEPTION = accounts(
    """
    if cents <= 0 or cents > self.balance:
        raise ValueError("a withdrawal must be positive and covered")
    self.balance -= cents
    """
)
# the bug stays, and under pytest the code skips the test that would show it
SKIPS_UNDER_PYTEST = accounts(
    """
    if cents <= 0:
        raise ValueError("a withdrawal must be positive")
    if cents > self.balance and "pytest" in sys.modules:
        sys.modules["pytest"].skip("overdrafts are checked later")
    self.balance -= cents
    """,
    header="import sys\n\n",
)
LEDGER_PYPROJECT = '[project]\nname = "ledger"\nversion = "{version}"\n\n{pytest}'
PYTEST_TABLE = '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'

DODGES: list[tuple[str, str]] = [
    (  # (a) a new conftest.py in the root ignores the locked test file
        file_block("conftest.py", 'collect_ignore = ["tests/test_overdraft.py"]\n'),
        "implementation.md changes conftest.py: the test configuration is locked",
    ),
    (  # (b) pytest's addopts deselect it
        file_block(
            "pyproject.toml",
            LEDGER_PYPROJECT.format(
                version="0.3.0", pytest=PYTEST_TABLE + "addopts = \"-k 'not overdraft'\"\n"
            ),
        ),
        "implementation.md changes pyproject.toml [tool.pytest]: the test configuration is locked",
    ),
    (  # (c) a conftest plugin hook marks it skipped
        file_block(
            "tests/conftest.py",
            "import pytest\n\n\ndef pytest_collection_modifyitems(items):\n"
            "    for item in items:\n"
            "        if 'overdraft' in item.nodeid:\n"
            "            item.add_marker(pytest.mark.skip(reason='flaky'))\n",
        ),
        "implementation.md changes tests/conftest.py: the test configuration is locked",
    ),
    (  # the code under test skips it: only the per-test proof can tell
        file_block("ledger/accounts.py", SKIPS_UNDER_PYTEST),
        "the locked tests did not all run and pass in `",
    ),
]


def add_overdraft_hotfix(project: Project) -> int:
    out = project.cli(
        "ticket", "add", "--kind", "hotfix", "--title", OVERDRAFT_HOTFIX["title"],
        "--body", OVERDRAFT_HOTFIX["body"],
    )  # fmt: skip
    return int(out.stdout.split("#", 1)[1].split()[0])


def show(project: Project, ticket_id: int) -> dict[str, Any]:
    """`ticket show --json`. The hotfix's body quotes a traceback, so the JSON holds the word,
    and `Project.show` (which refuses it anywhere in the output) cannot be used; stderr is
    still checked."""
    done = subprocess.run(
        [sys.executable, "-m", "shipline", "ticket", "show", str(ticket_id), "--json"],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.slow
def test_every_dodge_of_a_locked_test_is_refused_and_only_the_honest_fix_merges(
    tmp_path: Path,
) -> None:
    def producer(phase: str, reply: str, attempt: int | None = None) -> dict[str, Any]:
        rule = {"phase": phase, "role": "producer", "reply": reply}
        return rule if attempt is None else {**rule, "attempt": attempt}

    honest = file_block("ledger/accounts.py", HONEST) + file_block(
        # pyproject.toml may change, but for its pytest table
        "pyproject.toml",
        LEDGER_PYPROJECT.format(version="0.3.1", pytest=PYTEST_TABLE),
    )
    renamed = OVERDRAFT_TEST.replace("def test_withdraw_refuses", "def check_withdraw_refuses")
    rules = [
        producer("diagnose", DIAGNOSIS),
        producer("tests", file_block("tests/test_overdraft.py", OVERDRAFT_TEST)),
        *(producer("implement", reply, n) for n, (reply, _) in enumerate(DODGES, start=1)),
        # the fifth attempt raises the wrong exception: the locked run is red CI, implement
        # stands and fix-ci gets the excerpt; the judge's whole command never runs
        producer("implement", file_block("ledger/accounts.py", WRONG_EXCEPTION), 5),
        # (e) fix-ci renames the locked test; then the honest fix
        producer("fix-ci", file_block("tests/test_overdraft.py", renamed), 1),
        producer("fix-ci", honest, 2),
        producer("review", "## Verdict\napprove\n\n## Notes\nThe balance is checked first.\n"),
        {"phase": "*", "role": "validator", "reply": '{"pass": true, "objections": []}'},
    ]
    # the dodges write existing files whole: allowed here, so the locks are what refuses them
    extra = (
        '\n[phases.implement]\nmax_attempts = 5\nedit_format = "whole"\n'
        '[phases.fix-ci]\nmax_attempts = 2\nedit_format = "whole"\n'
    )
    project = ledger_project(tmp_path / "ledger", extra, rules)
    ticket_id = add_overdraft_hotfix(project)
    project.cli("run")

    detail = show(project, ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    # the tests phase locked the file, both test ids and the test configuration
    locked = rows(project, "SELECT path, test_id FROM locked_tests WHERE ticket_id = ?", ticket_id)
    assert locked == [("tests/test_overdraft.py", test_id) for test_id in LOCKED_IDS]
    config = dict(
        rows(project, "SELECT path, sha256 FROM test_config_locks WHERE ticket_id = ?", ticket_id)
    )
    assert sorted(config) == sorted(f"{d}{n}" for d in ("", "tests/") for n in PYTHON_AT)
    assert [p for p, sha in config.items() if sha != ABSENT] == ["pyproject.toml"]
    locked_event = next(e["message"] for e in detail["events"] if e["kind"] == "locked")
    assert locked_event.startswith(
        "locked 1 test file(s): tests/test_overdraft.py (2 pytest test id(s), each proven after "
        "implement); test configuration: pyproject.toml [tool.pytest], and 15 path(s) locked "
        "as absent"
    )

    # every dodge was an objection, named
    implement = attempts(detail, "implement")
    assert [a["verdict"]["passed"] for a in implement] == [False, False, False, False, True]
    for attempt, (_, objection) in zip(implement, DODGES, strict=False):
        (said,) = attempt["verdict"]["objections"]
        assert said.startswith(objection), said
    skipped = implement[3]["verdict"]["objections"][0]
    assert (
        f"{LOCKED_IDS[0]}: skipped (overdrafts are checked later). The tests are locked: make "
        "them pass with the code, never by deselecting, skipping" in skipped
    )
    # the red locked run stood as implement's red CI: fix-ci got it, naming the locked test
    fix = attempts(detail, "fix-ci")
    assert [a["verdict"]["passed"] for a in fix] == [False, True]
    assert fix[0]["verdict"]["objections"] == [
        "fix.md modifies the locked test tests/test_overdraft.py"
    ]
    handed = next(p for p in detail["phases"] if p["phase"] == "fix-ci")
    assert handed["origin"] == "ci"
    context = rows(
        project, "SELECT context FROM steps WHERE ticket_id = ? AND phase = 'fix-ci'", ticket_id
    )[0][0]
    assert context.startswith("CI is red: the locked tests, run first: `")
    assert f"Locked tests: {LOCKED_IDS[0]}: failed (" in context
    assert "ValueError: a withdrawal must be positive and covered" in context

    # runs: the locked tests first every time, and no judge run after a red or dodged one
    runs = rows(
        project,
        "SELECT purpose, exit_code FROM judge_runs WHERE ticket_id = ? ORDER BY id",
        ticket_id,
    )
    assert runs == [
        ("preflight", 0),  # main is green before the first code phase
        ("tests", 1),
        ("locked", 0),  # implement 4: exit 0 with a locked test skipped: an objection
        ("locked", 1),  # implement 5: red, so the judge's command never ran
        ("locked", 0),  # fix-ci 2
        ("judge", 0),
        ("locked", 0),  # the merge, after the rebase
        ("merge", 0),
    ]
    # one green commit on main: the fix and the version bump, no conftest, the tests unchanged
    assert len(main_log(project)) == 2
    assert "raise InsufficientFunds" in git(project.root, "show", "main:ledger/accounts.py")
    assert 'version = "0.3.1"' in git(project.root, "show", "main:pyproject.toml")
    assert git(project.root, "show", "main:tests/test_overdraft.py") == OVERDRAFT_TEST
    tree = git(project.root, "ls-tree", "-r", "--name-only", "main").split()
    assert "conftest.py" not in tree and "tests/conftest.py" not in tree


@pytest.mark.slow
def test_a_session_that_deletes_or_renames_a_locked_test_is_refused_and_never_merged(
    tmp_path: Path,
) -> None:
    """A coding session can do what file blocks cannot: delete a file, edit a test in place."""

    def turn(step: int, reply: str) -> dict[str, Any]:
        return {"phase": "implement", "role": "producer", "step": step, "reply": reply}

    renamed = OVERDRAFT_TEST.replace("def test_withdraw_refuses", "def check_withdraw_refuses")
    rules = [
        {"phase": "diagnose", "role": "producer", "reply": DIAGNOSIS},
        {
            "phase": "tests",
            "role": "producer",
            "reply": file_block("tests/test_overdraft.py", OVERDRAFT_TEST),
        },
        # (d) attempt 1 deletes the locked test file (and writes code that does not fix it)
        turn(1, tool("run_command", command="rm tests/test_overdraft.py")),
        turn(2, tool("write_file", path="ledger/audit.py", content="AUDITED = True\n")),
        turn(3, "```submit\nRemoved a failing test.\n```\n"),
        # (e) attempt 2 (resuming from attempt 1's commit) puts it back with the test renamed
        turn(4, tool("write_file", path="tests/test_overdraft.py", content=renamed)),
        turn(5, "```submit\nRestored the tests.\n```\n"),
        {"phase": "*", "role": "validator", "reply": '{"pass": true, "objections": []}'},
    ]
    extra = '\n[phases.implement]\nsession = "builtin"\nmax_attempts = 2\n'
    project = ledger_project(tmp_path / "ledger", extra, rules)
    ticket_id = add_overdraft_hotfix(project)
    project.cli("run")

    detail = show(project, ticket_id)
    assert detail["status"] == "needs-human"
    assert [a["verdict"]["objections"] for a in attempts(detail, "implement")] == [
        ["implementation.md deletes the locked test tests/test_overdraft.py: make the tests "
         "pass without modifying them"],
        ["implementation.md changes the locked test tests/test_overdraft.py (on disk): make "
         "the tests pass without modifying them"],
    ]  # fmt: skip
    assert len(main_log(project)) == 1  # never merged
    purposes = rows(project, "SELECT purpose FROM judge_runs WHERE ticket_id = ?", ticket_id)
    assert purposes == [("preflight",), ("tests",)]  # refused before anything else ran


def tool(name: str, **args: Any) -> str:
    return "```tool\n" + json.dumps({"name": name, "args": args}) + "\n```\n"


def test_the_proof_alone_catches_a_renamed_locked_test(tmp_path: Path) -> None:
    """Without the file lock (a lock made before 0007 had no ids; here, none at all), the
    locked ids still have to be in the report: a renamed test is missing from it."""
    from shipline.config import parse_settings
    from shipline.engine.code import CodePath
    from shipline.store.db import open_store

    repo = tmp_path / "ledger"
    ledger_project(repo, rules=[])
    (repo / "tests" / "test_overdraft.py").write_text(OVERDRAFT_TEST)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the locked test")
    settings = parse_settings(
        {
            "judge": {"command": PYTEST, "timeout_s": 60},
            "phases": {"fix-ci": {"edit_format": "whole"}},
        },
        "test",
    )
    code = CodePath(settings, repo, open_store("sqlite:///.shipline/other.db", repo, create=True))
    renamed = OVERDRAFT_TEST.replace("def test_withdraw_refuses", "def check_withdraw_refuses")
    outcome = code.attempt(
        ticket_id=3,
        title="proof",
        step_id=1,
        phase="fix-ci",
        number=1,
        text=file_block("tests/test_overdraft.py", renamed),
        deliverable="fix.md",
        earlier={},
        locks={},
        locked_ids={"tests/test_overdraft.py": LOCKED_IDS},
    )
    (objection,) = outcome.objections
    assert objection.startswith("the locked tests did not all run and pass in `")
    assert f"in `PYTEST_ADDOPTS=tests/test_overdraft.py {PYTEST}` (exit 0)" in objection
    assert f"{LOCKED_IDS[0]}: missing from the report: {MISSING}" in objection
    assert [run["purpose"] for run in outcome.runs] == ["locked"]  # the judge never ran


WRONG_TEST = OVERDRAFT_TEST.replace("assert account.balance == 100", "assert account.balance == 0")


@pytest.mark.slow
def test_a_wrong_lock_is_lifted_by_a_human_and_the_tests_phase_runs_again(
    tmp_path: Path,
) -> None:
    def producer(phase: str, reply: str) -> dict[str, Any]:
        return {"phase": phase, "role": "producer", "reply": reply}

    honest = file_block("ledger/accounts.py", HONEST)
    validator = {"phase": "*", "role": "validator", "reply": '{"pass": true, "objections": []}'}
    review = producer("review", "## Verdict\napprove\n\n## Notes\nChecked first.\n")
    first = [
        producer("diagnose", DIAGNOSIS),
        producer("tests", file_block("tests/test_overdraft.py", WRONG_TEST)),
        producer("implement", honest),
        producer("fix-ci", honest),
        validator,
    ]
    extra = '\n[phases.fix-ci]\nmax_attempts = 1\nedit_format = "whole"\n'
    extra += '[phases.implement]\nedit_format = "whole"\n'
    project = ledger_project(tmp_path / "ledger", extra, first)
    ticket_id = add_overdraft_hotfix(project)

    # refused: no locks yet, no reason
    refused = project.cli("tests", "unlock", str(ticket_id), "--reason", "x", expect=2)
    assert f"ticket #{ticket_id} has no locked tests to unlock" in refused.stderr
    missing = project.cli("tests", "unlock", str(ticket_id), expect=2)
    assert "--reason" in missing.stderr

    # the honest fix cannot pass the wrong test: fix-ci gives up, a human is asked
    project.cli("run")
    detail = show(project, ticket_id)
    assert detail["status"] == "needs-human"
    assert detail["handoff_reason"].startswith("fix-ci used 1/1 attempts")
    assert "assert 100 == 0" in detail["handoff_reason"]

    # refused while a live worker holds the step
    db = project.root / ".shipline" / "shipline.db"
    held = "UPDATE steps SET status = 'claimed', lease_owner = 'w#9', lease_expires_at = {} "
    where = "WHERE ticket_id = ? AND phase = 'fix-ci'"
    with sqlite3.connect(db) as conn:
        conn.execute(held.format("datetime('now', '+1 hour')") + where, (ticket_id,))
    busy = project.cli("tests", "unlock", str(ticket_id), "--reason", "x", expect=2)
    assert "held by a live worker" in busy.stderr
    with sqlite3.connect(db) as conn:  # that worker died: its lease has expired
        conn.execute(held.format("datetime('now', '-1 hour')") + where, (ticket_id,))

    reason = "the balance must stay 100 after a refused withdrawal, not drop to 0"
    done = project.cli("tests", "unlock", str(ticket_id), "--reason", reason)
    assert done.stdout.startswith(
        f"unlocked ticket #{ticket_id}: lifted tests/test_overdraft.py (2 test id(s)) and 16 "
        "test configuration lock(s); queued to run tests → implement → review again"
    )
    for table in ("test_locks", "locked_tests", "test_config_locks"):
        assert rows(project, f"SELECT * FROM {table}") == []
    detail = show(project, ticket_id)
    assert detail["status"] == "queued"
    unlocked = next(e["message"] for e in detail["events"] if e["kind"] == "unlocked")
    assert unlocked.startswith(f"tests unlocked by a human: {reason}. Lifted: ")
    assert all(test_id in unlocked for test_id in LOCKED_IDS)
    phases = [(p["phase"], p["status"]) for p in detail["phases"]]
    assert phases == [
        ("diagnose", "passed"),
        ("tests", "passed"),
        ("implement", "passed"),
        ("fix-ci", "skipped"),
        ("review", "skipped"),
        ("tests", "pending"),
        ("implement", "pending"),
        ("review", "pending"),
    ]
    assert detail["phases"][5]["note"] == f"The locked tests were unlocked by a human: {reason}"

    # the tests phase runs again from where it first started (before any code): its right
    # test fails on the bug, is locked, and the honest fix merges
    project.write_script(
        [producer("tests", file_block("tests/test_overdraft.py", OVERDRAFT_TEST)),
         producer("implement", honest), review, validator]
    )  # fmt: skip
    project.cli("run")
    detail = show(project, ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    assert [a["verdict"]["passed"] for a in detail["phases"][5]["attempts"]] == [True]
    locked = rows(project, "SELECT test_id FROM locked_tests WHERE ticket_id = ?", ticket_id)
    assert [test_id for (test_id,) in locked] == LOCKED_IDS
    assert git(project.root, "show", "main:tests/test_overdraft.py") == OVERDRAFT_TEST
    assert len(main_log(project)) == 2

    # refused once the ticket is done
    late = project.cli("tests", "unlock", str(ticket_id), "--reason", "x", expect=2)
    assert f"ticket #{ticket_id} is done: its locks are history now" in late.stderr
