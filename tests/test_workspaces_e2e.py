"""Tickets become merged, green code: the real CLI on a real git repo with a judge.

The demo's sample package (`greet`, with a pytest suite) is a git repository; shipline.toml
sets `[judge] command` to pytest. The scripted provider replays the demo's recorded answers,
with a few extra rules per test for attempts that go wrong.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from conftest import SCRIPTED_TOML, Project, demo_ticket, git, replay_rules
from shipline.demo.sample import write_sample_repo
from shipline.engine.code import wrong_failure
from shipline.judge.runner import run_command

# The sample package needs no pytest plugin; not loading those installed here (langsmith…)
# keeps each judge run under a second.
PYTHON = shlex.quote(sys.executable)
PYTEST = f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {PYTHON} -m pytest -q -p no:cacheprovider"
JUDGE_TOML = f"""
[judge]
command = "{PYTEST}"
timeout_s = 60
"""


def sample_project(
    root: Path, extra_toml: str = "", rules: list[dict[str, Any]] | None = None
) -> Project:
    """The demo's sample repo under git, on a scripted provider, with pytest as the judge."""
    write_sample_repo(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / "shipline.toml").write_text(SCRIPTED_TOML + JUDGE_TOML + extra_toml, encoding="utf-8")
    project = Project(root, None)
    project.write_script((rules or []) + replay_rules())
    project.cli("init")
    return project


def rows(project: Project, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(project.root / ".shipline" / "shipline.db") as conn:
        return list(conn.execute(query, args))


def main_log(project: Project) -> list[str]:
    return git(project.root, "log", "--format=%H %s", "main").splitlines()


def assert_every_commit_is_green(project: Project, tmp_path: Path) -> None:
    """Run the suite on every commit of main, each in a fresh export of its tree."""
    for line in main_log(project):
        sha = line.split()[0]
        folder = tmp_path / f"export-{sha[:10]}"
        folder.mkdir()
        archive = subprocess.run(
            ["git", "archive", sha], cwd=project.root, capture_output=True, check=True
        ).stdout
        archive_path = folder.with_suffix(".tar")
        archive_path.write_bytes(archive)
        with tarfile.open(archive_path) as tar:
            tar.extractall(folder, filter="data")
        result = run_command(PYTEST, folder, 60)
        assert result.ok, f"main commit {line} is red:\n{result.log}"


def attempts(detail: dict[str, Any], phase: str) -> list[dict[str, Any]]:
    return next(p for p in detail["phases"] if p["phase"] == phase)["attempts"]


def test_feature_and_hotfix_write_failing_tests_turn_ci_green_and_merge(tmp_path: Path) -> None:
    project = sample_project(tmp_path / "repo")
    feature, hotfix = demo_ticket("feature"), demo_ticket("hotfix")
    feature_id = project.add("feature", feature["title"], feature["body"])
    hotfix_id = project.add("hotfix", hotfix["title"], hotfix["body"])
    project.cli("run")

    details = {ticket_id: project.show(ticket_id) for ticket_id in (feature_id, hotfix_id)}
    assert [d["status"] for d in details.values()] == ["done", "done"]
    # each ticket ran its new tests red, the judge green, and the judge again before merging
    for ticket_id in (feature_id, hotfix_id):
        runs = rows(
            project,
            "SELECT purpose, exit_code FROM judge_runs WHERE ticket_id = ? ORDER BY id",
            ticket_id,
        )
        assert runs == [("tests", 1), ("judge", 0), ("merge", 0)]
        for (log_path,) in rows(
            project, "SELECT log_path FROM judge_runs WHERE ticket_id = ?", ticket_id
        ):
            assert "passed" in Path(log_path).read_text() or "failed" in Path(log_path).read_text()
    locks = rows(project, "SELECT ticket_id, path FROM test_locks ORDER BY ticket_id")
    assert locks == [(feature_id, "tests/test_shout.py"), (hotfix_id, "tests/test_empty_name.py")]

    # main: one squashed, green commit per ticket, in merge order, recorded as merge events
    log = main_log(project)
    assert [line.split(" ", 1)[1] for line in log] == [
        f"shipline #{hotfix_id}: {hotfix['title']}",
        f"shipline #{feature_id}: {feature['title']}",
        "init",
    ]
    merges = rows(project, 'SELECT ticket_id, target, "commit" FROM merges ORDER BY id')
    assert merges == [
        (feature_id, "main", log[1].split()[0]),
        (hotfix_id, "main", log[0].split()[0]),
    ]
    assert_every_commit_is_green(project, tmp_path)
    # the main checkout was fast-forwarded too, with the code and the deliverables
    assert "--shout" in (project.root / "greet" / "cli.py").read_text()
    assert "must not be empty" in (project.root / "greet" / "__init__.py").read_text()
    shipped = project.root / ".shipline" / str(feature_id)
    assert sorted(p.name for p in shipped.iterdir()) == [
        "design.md",
        "implementation.md",
        "plan.md",
        "review.md",
        "spec.md",
        "tests.md",
    ]
    assert (project.root / ".shipline" / str(hotfix_id) / "diagnosis.md").is_file()
    # every judge run is visible in the ticket's history
    events = [e["message"] for e in details[feature_id]["events"]]
    assert any(e.startswith("tests: `") and "exit 1" in e for e in events)
    assert any(e.startswith("main fast-forwarded to") for e in events)

    # `shipline workspaces`: both worktrees, their tickets done; prune past retention
    listed = json.loads(project.cli("workspaces", "--json").stdout)["workspaces"]
    assert {(w["ticket"], w["ticket_status"], w["state"]) for w in listed} == {
        (str(feature_id), "done", "ok"),
        (str(hotfix_id), "done", "ok"),
    }
    assert all(w["disk_bytes"] > 0 for w in listed)
    kept = json.loads(project.cli("workspaces", "--prune", "--json").stdout)
    assert kept["removed"] == []  # within the default 7 days of retention
    foreign = Path(listed[0]["path"]).parent / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("not shipline's")
    with (project.root / "shipline.toml").open("a") as toml:
        toml.write("\n[workspaces]\nretention_days = 0\n")
    pruned = json.loads(project.cli("workspaces", "--prune", "--json").stdout)
    assert sorted(w["ticket"] for w in pruned["removed"]) == sorted(
        [str(feature_id), str(hotfix_id)]
    )
    assert [w["state"] for w in pruned["workspaces"]] == ["foreign"]
    assert (foreign / "mine.txt").read_text() == "not shipline's"


SHOUT_CLI_RETURNS_1 = '''\
### File: greet/cli.py
```python
"""Command line: `python -m greet.cli NAME [--shout]` prints the greeting for NAME."""

from __future__ import annotations

import argparse

from greet import greet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greet", description="Print a greeting.")
    parser.add_argument("name", help="who to greet")
    parser.add_argument("--shout", action="store_true", help="print the greeting in upper case")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    message = greet(args.name)
    print(message.upper() if args.shout else message)
    return 0 if args.shout else 1
```
'''

WEAKENED_TEST_THROUGH_A_SYMLINK = """\
### File: greet/shout_cases.py
```python
def test_nothing():
    assert True
```
"""


def test_red_ci_and_a_locked_test_edit_become_objections_and_the_ticket_recovers(
    tmp_path: Path,
) -> None:
    rules: list[dict[str, Any]] = [
        {  # tests attempt 1: a test that already passes tests nothing new
            "phase": "tests",
            "role": "producer",
            "title": "shout",
            "attempt": 1,
            "reply": "### File: tests/test_shout.py\n```python\nfrom greet import greet\n\n\n"
            "def test_r1_r2_r3_greets():\n    assert greet('Ada') == 'Hello, Ada!'\n```\n",
        },
        {  # implement attempt 1: --shout works, but the existing CLI test goes red
            "phase": "implement",
            "role": "producer",
            "title": "shout",
            "attempt": 1,
            "reply": SHOUT_CLI_RETURNS_1,
        },
        {  # implement attempt 2: writes the locked test through a symlink in the repository
            "phase": "implement",
            "role": "producer",
            "title": "shout",
            "attempt": 2,
            "reply": WEAKENED_TEST_THROUGH_A_SYMLINK,
        },
    ]
    root = tmp_path / "repo"
    root.mkdir()
    (root / "greet").mkdir()
    os.symlink("../tests/test_shout.py", root / "greet" / "shout_cases.py")
    project = sample_project(root, rules=rules)
    feature = demo_ticket("feature")
    ticket_id = project.add("feature", feature["title"], feature["body"])
    project.cli("run")

    detail = project.show(ticket_id)
    assert detail["status"] == "done"
    tests = attempts(detail, "tests")
    assert [a["verdict"]["source"] for a in tests] == ["judge", "validator"]
    assert tests[0]["verdict"]["objections"][0].startswith("the new tests already pass")

    implement = attempts(detail, "implement")
    assert [a["verdict"]["passed"] for a in implement] == [False, False, True]
    red = implement[0]["verdict"]["objections"]
    assert implement[0]["verdict"]["source"] == "judge"
    assert red[0].startswith("CI is red: `")
    assert "test_cli_prints_the_greeting" in red[0]  # the failure excerpt names the broken test
    assert implement[1]["verdict"]["objections"] == [
        "implementation.md changes the locked test tests/test_shout.py (on disk): make the "
        "tests pass without modifying them"
    ]
    # the third attempt's prompt carries the objections of both earlier attempts
    prompt = attempt_prompt(project, ticket_id, "implement", 3)
    assert "test_cli_prints_the_greeting" in prompt
    assert "changes the locked test tests/test_shout.py" in prompt

    # the merged test file is the one the tests phase locked, and main is green
    locked = rows(project, "SELECT path FROM test_locks WHERE ticket_id = ?", ticket_id)
    assert locked == [("tests/test_shout.py",)]
    assert "def test_r3_help_lists_the_shout_flag" in git(
        project.root, "show", "main:tests/test_shout.py"
    )
    assert len(main_log(project)) == 2
    assert_every_commit_is_green(project, tmp_path)


WHISPER_DIAGNOSIS = """\
## Reproduction
    $ python -m greet.cli Ada --whisper
    error: unrecognized arguments: --whisper

## Root cause
`build_parser()` in greet/cli.py has no `--whisper` flag.

## Fix plan
Add `--whisper` to `build_parser()`; `main()` prints the greeting in lower case with it.

## Regression test
tests/test_whisper.py: `main(["Ada", "--whisper"])` prints `hello, ada!`.
"""

WHISPER_TESTS = """\
### File: tests/test_whisper.py
```python
from greet.cli import main


def test_whisper_prints_the_greeting_in_lower_case(capsys):
    assert main(["Ada", "--whisper"]) == 0
    assert capsys.readouterr().out == "hello, ada!\\n"
```
"""

WHISPER_CODE = '''\
### File: greet/cli.py
```python
"""Command line: `python -m greet.cli NAME [--whisper]` prints the greeting for NAME."""

from __future__ import annotations

import argparse

from greet import greet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greet", description="Print a greeting.")
    parser.add_argument("name", help="who to greet")
    parser.add_argument("--whisper", action="store_true", help="print it in lower case")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    message = greet(args.name)
    print(message.lower() if args.whisper else message)
    return 0
```
'''


def test_two_tickets_changing_one_file_the_second_is_rebased_and_handed_off_naming_it(
    tmp_path: Path,
) -> None:
    def producer(phase: str, reply: str) -> dict[str, Any]:
        return {"phase": phase, "role": "producer", "title": "whisper", "reply": reply}

    rules: list[dict[str, Any]] = [
        producer("diagnose", WHISPER_DIAGNOSIS),
        producer("tests", WHISPER_TESTS),
        producer("implement", WHISPER_CODE),
        producer("review", "## Verdict\napprove\n\n## Notes\nLower case, as asked.\n"),
        {  # the shout ticket's first review is rejected, so the whisper ticket merges first
            "phase": "review",
            "role": "validator",
            "title": "shout",
            "attempt": 1,
            "reply": '{"pass": false, "objections": ["say more about R3"]}',
        },
    ]
    project = sample_project(
        tmp_path / "repo", "\n[phases.review]\nmax_attempts = 1\n", rules=rules
    )
    feature = demo_ticket("feature")
    shout_id = project.add("feature", feature["title"], feature["body"])
    whisper_id = project.add("hotfix", "Add a --whisper flag", "Print it in lower case.")
    project.cli("run")
    assert project.show(shout_id)["status"] == "needs-human"
    assert project.show(whisper_id)["status"] == "done"
    assert main_log(project)[0].endswith(f"shipline #{whisper_id}: Add a --whisper flag")

    project.cli("retry", str(shout_id))
    project.cli("run")
    detail = project.show(shout_id)
    assert detail["status"] == "needs-human"
    assert detail["handoff_reason"].startswith(
        "merge: rebasing onto main conflicts in greet/cli.py"
    )
    # main holds only the first ticket's green merge; the second left it untouched
    assert len(main_log(project)) == 2
    assert rows(project, "SELECT ticket_id FROM merges") == [(whisper_id,)]
    assert_every_commit_is_green(project, tmp_path)
    # the shout worktree is clean (the rebase was aborted) and on its own branch
    worktree = tmp_path / "repo.worktrees" / str(shout_id)
    assert git(worktree, "status", "--porcelain", "--untracked-files=no") == ""
    assert git(worktree, "branch", "--show-current").startswith(f"shipline/{shout_id}-")


def attempt_prompt(project: Project, ticket_id: int, phase: str, number: int) -> str:
    messages = rows(
        project,
        "SELECT a.prompt FROM attempts a JOIN steps s ON a.step_id = s.id "
        "WHERE s.ticket_id = ? AND s.phase = ? AND a.number = ?",
        ticket_id,
        phase,
        number,
    )
    return str(messages[0][0])


# --- "fail for the right reason", on real pytest runs ----------------------------------------


def run_new_tests(tmp_path: Path, test_source: str) -> list[str]:
    write_sample_repo(tmp_path)
    (tmp_path / "tests" / "test_new.py").write_text(test_source)
    result = run_command(f"{PYTEST} tests/test_new.py", tmp_path, 60)
    return wrong_failure(result, 60, lambda name: (tmp_path / name).exists(), 2000)


def test_a_failed_assertion_is_the_right_reason(tmp_path: Path) -> None:
    source = "from greet import greet\n\ndef test_x():\n    assert greet('Ada') == 'Hi'\n"
    assert run_new_tests(tmp_path, source) == []


def test_importing_a_missing_module_of_the_repository_is_missing_behaviour(tmp_path: Path) -> None:
    source = "from greet.i18n import greet_in\n\ndef test_x():\n    assert greet_in('a', 'fr')\n"
    assert run_new_tests(tmp_path, source) == []


def test_a_test_file_that_does_not_compile_is_an_objection(tmp_path: Path) -> None:
    objections = run_new_tests(tmp_path, "def test_x(:\n    pass\n")
    assert len(objections) == 1
    assert objections[0].startswith("tests/test_new.py does not collect (SyntaxError)")


def test_importing_an_unknown_package_is_an_objection(tmp_path: Path) -> None:
    objections = run_new_tests(tmp_path, "import no_such_package_xyz\n\ndef test_x():\n    pass\n")
    assert len(objections) == 1
    assert objections[0].startswith(
        "tests/test_new.py imports no_such_package_xyz, which is neither in the repository"
    )


def test_a_missing_fixture_is_an_objection(tmp_path: Path) -> None:
    objections = run_new_tests(tmp_path, "def test_x(no_such_fixture):\n    assert False\n")
    assert len(objections) == 1
    assert "errors outside the test body" in objections[0]


def test_passing_new_tests_are_an_objection(tmp_path: Path) -> None:
    objections = run_new_tests(tmp_path, "def test_x():\n    assert True\n")
    assert objections == [
        f"the new tests already pass (`{PYTEST} tests/test_new.py` exit 0): they test nothing new"
    ]


# --- a hanging judge, a failing setup ---------------------------------------------------------


def code_judge(repo: Path, judge: str, **sections: dict[str, Any]) -> Any:
    from shipline.config import parse_settings
    from shipline.engine.code import CodeJudge

    write_sample_repo(repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    settings = parse_settings({"judge": {"command": judge, "timeout_s": 1}, **sections}, "test")
    return CodeJudge(settings, repo)


def test_a_hanging_judge_is_killed_at_the_timeout_and_reported(tmp_path: Path) -> None:
    judge = code_judge(tmp_path / "repo", "sleep 30 & sleep 30")
    outcome = judge.attempt(
        ticket_id=7,
        title="hang",
        step_id=1,
        phase="implement",
        number=1,
        text="### File: greet/extra.py\n```python\nX = 1\n```\n",
        deliverable="implementation.md",
        earlier={},
        locks={},
    )
    assert len(outcome.objections) == 1
    assert outcome.objections[0].startswith(
        "CI is red: `sleep 30 & sleep 30` killed after the 1 s timeout"
    )
    (run,) = outcome.runs
    assert run["timed_out"] is True and run["duration_s"] < 10
    assert "killed after the 1 s timeout" in Path(run["log_path"]).read_text()


def test_a_failing_setup_command_is_a_clear_workspace_error(tmp_path: Path) -> None:
    import pytest

    from shipline.workspaces import SetupError

    judge = code_judge(tmp_path / "repo", PYTEST, workspaces={"setup": ["exit 3"]})
    with pytest.raises(SetupError, match=r"setup command `exit 3` \(exit 3\) failed"):
        judge.workspace(8, "setup")


def test_the_tests_command_selects_the_new_test_files_through_the_files_placeholder() -> None:
    from shipline.engine.code import tests_command

    assert (
        tests_command("pytest -q {files}", ("tests/test_a.py", "tests/it's.py"))
        == "pytest -q tests/test_a.py 'tests/it'\"'\"'s.py'"
    )
    assert tests_command("make test", ("tests/test_a.py",)) == "make test"
