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

import pytest

from conftest import SCRIPTED_TOML, Project, demo_ticket, git, make_project, replay_rules
from shipline.demo.sample import SAMPLE_FILES, write_sample_repo
from shipline.judge.failures import wrong_failure
from shipline.phases.markdown import parse_changes
from shipline.process import run_command
from shipline.workspaces.edits import apply_search_replace

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
    root: Path,
    extra_toml: str = "",
    rules: list[dict[str, Any]] | None = None,
    db_url: str | None = None,
) -> Project:
    """The demo's sample repo under git, on a scripted provider, with pytest as the judge."""
    write_sample_repo(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / "shipline.toml").write_text(SCRIPTED_TOML + JUDGE_TOML + extra_toml, encoding="utf-8")
    project = Project(root, db_url)
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


@pytest.mark.slow
def test_feature_and_hotfix_write_failing_tests_turn_ci_green_and_merge(tmp_path: Path) -> None:
    project = sample_project(tmp_path / "repo")
    feature, hotfix = demo_ticket("feature"), demo_ticket("hotfix")
    feature_id = project.add("feature", feature["title"], feature["body"])
    hotfix_id = project.add("hotfix", hotfix["title"], hotfix["body"])
    project.cli("run")

    details = {ticket_id: project.show(ticket_id) for ticket_id in (feature_id, hotfix_id)}
    assert [d["status"] for d in details.values()] == ["done", "done"]
    # each ticket judged its base green (preflight: the feature merged first, so the hotfix
    # started from another commit), ran its new tests red, the judge green, and the judge again
    # before merging
    for ticket_id in (feature_id, hotfix_id):
        runs = rows(
            project,
            "SELECT purpose, exit_code FROM judge_runs WHERE ticket_id = ? ORDER BY id",
            ticket_id,
        )
        # preflight on the base; the locked tests run first (green), before the judge and
        # before the merge's judge
        assert runs == [
            ("preflight", 0),
            ("tests", 1),
            ("locked", 0),
            ("judge", 0),
            ("locked", 0),
            ("merge", 0),
        ]
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
    # the main checkout was fast-forwarded too, with the code; the deliverables stay on each
    # ticket's branch ([merge] include_deliverables is false by default)
    assert "--shout" in (project.root / "greet" / "cli.py").read_text()
    assert "must not be empty" in (project.root / "greet" / "__init__.py").read_text()
    on_main = git(project.root, "ls-tree", "-r", "--name-only", "main").split()
    assert not [path for path in on_main if path.startswith(".shipline/")]
    assert not (project.root / ".shipline" / str(feature_id)).exists()

    def on_branch(ticket_id: int) -> list[str]:
        (branch,) = git(
            project.root, "branch", "--list", "--format=%(refname:short)", f"shipline/{ticket_id}-*"
        ).split()
        return git(project.root, "ls-tree", "-r", "--name-only", branch).split()

    shipped = [p for p in on_branch(feature_id) if p.startswith(f".shipline/{feature_id}/")]
    assert sorted(p.rsplit("/", 1)[1] for p in shipped) == [
        "design.md",
        "implementation.md",
        "plan.md",
        "review.md",
        "spec.md",
        "tests.md",
    ]
    assert f".shipline/{hotfix_id}/diagnosis.md" in on_branch(hotfix_id)
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


def replayed_reply(phase: str, title: str) -> str:
    """The demo's recorded producer answer for a phase of a ticket."""
    return str(
        next(
            rule["reply"]
            for rule in replay_rules()
            if rule["phase"] == phase and rule["role"] == "producer" and rule["title"] == title
        )
    )


def shout_code() -> str:
    """The demo's recorded greet/cli.py with --shout: its edit applied to the sample's file."""
    (edit,) = parse_changes(replayed_reply("implement", "shout")).edits
    code, problems = apply_search_replace(edit.path, SAMPLE_FILES[edit.path], edit.blocks)
    assert problems == []
    return code


def with_block(reply: str, search: str, replace: str) -> str:
    """`reply` (one edit) with one more SEARCH/REPLACE block at its end."""
    head, tail = reply.rsplit("```", 1)
    block = f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"
    return f"{head}{block}```{tail}"


def cli_edit(search: str, replace: str) -> str:
    """An edit of greet/cli.py with one SEARCH/REPLACE block."""
    return with_block("### Edit: greet/cli.py\n```python\n```\n", search, replace)


# --shout works, but main() returns 1 without it: the existing CLI test goes red
SHOUT_CLI_RETURNS_1 = with_block(
    replayed_reply("implement", "shout"), "    return 0\n", "    return 0 if args.shout else 1\n"
)
assert replayed_reply("implement", "shout") != SHOUT_CLI_RETURNS_1
# fix-ci on top of it: the right exit code again, or another wrong one
EXIT_CODE_FIXED = cli_edit("    return 0 if args.shout else 1\n", "    return 0\n")
EXIT_CODE_STILL_WRONG = cli_edit(
    "    return 0 if args.shout else 1\n", "    return 0 if args.shout else 2\n"
)


WEAKENED_TEST_THROUGH_A_SYMLINK = """\
### Edit: greet/shout_cases.py
```python
<<<<<<< SEARCH
    assert main(["Ada", "--shout"]) == 0
=======
    assert True
>>>>>>> REPLACE
```
"""


def test_red_ci_goes_through_fix_ci_and_a_locked_test_edit_is_caught(tmp_path: Path) -> None:
    rules: list[dict[str, Any]] = [
        {  # tests attempt 1: a test that already passes tests nothing new
            "phase": "tests",
            "role": "producer",
            "title": "shout",
            "attempt": 1,
            "reply": "### File: tests/test_shout.py\n```python\nfrom greet import greet\n\n\n"
            "def test_r1_r2_r3_greets():\n    assert greet('Ada') == 'Hello, Ada!'\n```\n",
        },
        {  # implement: --shout works, but the existing CLI test goes red
            "phase": "implement",
            "role": "producer",
            "title": "shout",
            "reply": SHOUT_CLI_RETURNS_1,
        },
        {  # fix-ci attempt 1: writes the locked test through a symlink in the repository
            "phase": "fix-ci",
            "role": "producer",
            "title": "shout",
            "attempt": 1,
            "reply": WEAKENED_TEST_THROUGH_A_SYMLINK,
        },
        {  # fix-ci attempt 2: the right code
            "phase": "fix-ci",
            "role": "producer",
            "title": "shout",
            "attempt": 2,
            "reply": EXIT_CODE_FIXED,
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
    assert [p["phase"] for p in detail["phases"]][-3:] == ["implement", "fix-ci", "review"]
    tests = attempts(detail, "tests")
    assert [a["verdict"]["source"] for a in tests] == ["judge", "validator"]
    assert tests[0]["verdict"]["objections"][0].startswith("the new tests already pass")

    # implement stands with red CI; the red run starts fix-ci with the failure excerpt
    assert [a["verdict"]["passed"] for a in attempts(detail, "implement")] == [True]
    assert any(e["message"] == "CI is red after implement: fix-ci starts" for e in detail["events"])
    fix = attempts(detail, "fix-ci")
    assert [a["verdict"]["passed"] for a in fix] == [False, True]
    first_prompt = attempt_prompt(project, ticket_id, "fix-ci", 1)
    assert "CI is red: `" in first_prompt
    assert "test_cli_prints_the_greeting" in first_prompt  # the excerpt names the broken test
    assert fix[0]["verdict"]["objections"] == [
        "fix.md changes the locked test tests/test_shout.py (on disk): make the "
        "tests pass without modifying them"
    ]
    # the second fix attempt's prompt carries the first one's objection
    assert "changes the locked test tests/test_shout.py" in attempt_prompt(
        project, ticket_id, "fix-ci", 2
    )
    runs = rows(
        project,
        "SELECT purpose, exit_code FROM judge_runs WHERE ticket_id = ? ORDER BY id",
        ticket_id,
    )
    # the locked tests run first each time (green here: implement broke another test)
    assert [purpose for purpose, _ in runs] == [
        "preflight",
        "tests",
        "tests",
        "locked",
        "judge",
        "locked",
        "judge",
        "locked",
        "merge",
    ]
    assert [code for _, code in runs][3:] == [0, 1, 0, 0, 0, 0]

    # the merged test file is the one the tests phase locked, and main is green
    locked = rows(project, "SELECT path FROM test_locks WHERE ticket_id = ?", ticket_id)
    assert locked == [("tests/test_shout.py",)]
    assert "def test_r3_help_lists_the_shout_flag" in git(
        project.root, "show", "main:tests/test_shout.py"
    )
    assert len(main_log(project)) == 2
    assert_every_commit_is_green(project, tmp_path)


def test_fix_ci_has_its_own_attempt_limit_then_hands_off(tmp_path: Path) -> None:
    rules: list[dict[str, Any]] = [
        {"phase": "implement", "role": "producer", "title": "shout", "reply": SHOUT_CLI_RETURNS_1},
        {"phase": "fix-ci", "role": "producer", "title": "shout", "reply": EXIT_CODE_STILL_WRONG},
    ]
    extra = "\n[phases.fix-ci]\nmax_attempts = 2\n[phases.implement]\nmax_attempts = 5\n"
    project = sample_project(tmp_path / "repo", extra, rules=rules)
    feature = demo_ticket("feature")
    ticket_id = project.add("feature", feature["title"], feature["body"])
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    assert detail["handoff_reason"].startswith("fix-ci used 2/2 attempts; remaining objections: CI")
    assert [a["verdict"]["passed"] for a in attempts(detail, "fix-ci")] == [False, False]
    assert len(main_log(project)) == 1  # main untouched


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
### Edit: greet/cli.py
```python
<<<<<<< SEARCH
"""Command line: `python -m greet.cli NAME` prints the greeting for NAME."""
=======
"""Command line: `python -m greet.cli NAME [--whisper]` prints the greeting for NAME."""
>>>>>>> REPLACE
<<<<<<< SEARCH
    parser.add_argument("name", help="who to greet")
=======
    parser.add_argument("name", help="who to greet")
    parser.add_argument("--whisper", action="store_true", help="print it in lower case")
>>>>>>> REPLACE
<<<<<<< SEARCH
    print(greet(args.name))
=======
    message = greet(args.name)
    print(message.lower() if args.whisper else message)
>>>>>>> REPLACE
```
'''

# An answer that applies but leaves the merge's conflict in greet/cli.py unresolved.
README_EDIT = """\
### Edit: README.md
```markdown
<<<<<<< SEARCH
Prints a greeting.
=======
Prints a greeting, loud or quiet.
>>>>>>> REPLACE
```
"""


BOTH_FLAGS = '''\
### File: greet/cli.py
```python
"""Command line: `python -m greet.cli NAME [--shout] [--whisper]` prints the greeting."""

from __future__ import annotations

import argparse

from greet import greet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greet", description="Print a greeting.")
    parser.add_argument("name", help="who to greet")
    parser.add_argument("--shout", action="store_true", help="print the greeting in upper case")
    parser.add_argument("--whisper", action="store_true", help="print it in lower case")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    message = greet(args.name)
    if args.shout:
        message = message.upper()
    elif args.whisper:
        message = message.lower()
    print(message)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
```
'''


@pytest.mark.slow
def test_two_tickets_changing_one_file_the_second_goes_through_fix_ci_and_merges(
    tmp_path: Path,
) -> None:
    def producer(phase: str, reply: str, **match: Any) -> dict[str, Any]:
        return {"phase": phase, "role": "producer", "reply": reply, **match}

    rules: list[dict[str, Any]] = [
        producer("diagnose", WHISPER_DIAGNOSIS, title="whisper"),
        producer("tests", WHISPER_TESTS, title="whisper"),
        producer("implement", WHISPER_CODE, title="whisper"),
        producer(
            "review", "## Verdict\napprove\n\n## Notes\nLower case, as asked.\n", title="whisper"
        ),
        {  # the shout ticket's first review is rejected, so the whisper ticket merges first
            "phase": "review",
            "role": "validator",
            "title": "shout",
            "attempt": 1,
            "reply": '{"pass": false, "objections": ["say more about R3"]}',
        },
        # fix-ci after the conflict: a first answer that leaves it, then the resolution
        producer("fix-ci", README_EDIT, title="shout", attempt=1),
        producer("fix-ci", BOTH_FLAGS, title="shout", attempt=2),
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
    assert detail["status"] == "done", detail["handoff_reason"]
    assert [p["phase"] for p in detail["phases"]][-2:] == ["review", "fix-ci"]
    assert any(
        e["message"] == "the merge found a conflict: fix-ci starts" for e in detail["events"]
    )
    fix = attempts(detail, "fix-ci")
    assert fix[0]["verdict"]["objections"][0].startswith(
        "the merge of main still conflicts in greet/cli.py"
    )
    prompt = attempt_prompt(project, shout_id, "fix-ci", 1)
    assert "### greet/cli.py on main" in prompt and "### greet/cli.py on this ticket" in prompt
    assert [a["verdict"]["passed"] for a in fix] == [False, True]
    # main holds both tickets, each a single green commit on top of the other
    log = main_log(project)
    assert len(log) == 3 and log[0].endswith(f"shipline #{shout_id}: {feature['title']}")
    cli = git(project.root, "show", "main:greet/cli.py")
    assert "--shout" in cli and "--whisper" in cli
    assert rows(project, "SELECT ticket_id FROM merges ORDER BY id") == [(whisper_id,), (shout_id,)]
    assert_every_commit_is_green(project, tmp_path)


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


def code_judge(repo: Path, judge: str, remote: Any = None, **sections: dict[str, Any]) -> Any:
    from shipline.config import parse_settings
    from shipline.engine.code import CodePath

    write_sample_repo(repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    from shipline.store.db import open_store

    settings = parse_settings({"judge": {"command": judge, "timeout_s": 1}, **sections}, "test")
    return CodePath(
        settings, repo, open_store("sqlite:///.shipline/shipline.db", repo, create=True), remote
    )


def test_a_hanging_judge_is_killed_at_the_timeout_and_reported(tmp_path: Path) -> None:
    judge = code_judge(tmp_path / "repo", "sleep 30 & sleep 30")
    outcome = judge.attempt(
        ticket_id=7,
        title="hang",
        step_id=1,
        phase="fix-ci",
        number=1,
        text="### File: greet/extra.py\n```python\nX = 1\n```\n",
        deliverable="fix.md",
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


def test_another_judge_plugs_in_and_its_red_result_is_judged_like_ci(tmp_path: Path) -> None:
    """The judge is an interface: a remote judge (GitHub checks) returns the same result."""
    from shipline.process import CommandResult

    asked: list[tuple[str, Path]] = []

    class ChecksJudge:
        def run(self, command: str, worktree: Path, timeout_s: float, log_path: Path) -> Any:
            asked.append((command, worktree))
            log = "FAILED tests/test_cli.py::test_help - checks: build (ubuntu) failed\n"
            log_path.write_text(log)
            return CommandResult(f"gh pr checks ({command})", 1, 2.5, log, timed_out=False)

    judge = code_judge(tmp_path / "repo", "ci", ChecksJudge())
    outcome = judge.attempt(
        ticket_id=9,
        title="remote",
        step_id=1,
        phase="fix-ci",
        number=1,
        text="### File: greet/extra.py\n```python\nX = 1\n```\n",
        deliverable="fix.md",
        earlier={},
        locks={},
    )
    assert asked == [("ci", tmp_path / "repo.worktrees" / "9")]
    assert outcome.objections[0].startswith("CI is red: `gh pr checks (ci)` exit 1 after 2.5 s")
    assert "test_help" in outcome.objections[0]
    assert outcome.runs[0]["exit_code"] == 1


def test_a_failing_setup_command_is_a_clear_workspace_error(tmp_path: Path) -> None:
    import pytest

    from shipline.workspaces import SetupError

    judge = code_judge(tmp_path / "repo", PYTEST, workspaces={"setup": ["exit 3"]})
    with pytest.raises(SetupError, match=r"setup command `exit 3` \(exit 3\) failed"):
        judge.workspace(8, "setup")


def test_the_tests_command_selects_the_new_test_files_through_the_files_placeholder() -> None:
    from shipline.judge.failures import tests_command

    assert (
        tests_command("pytest -q {files}", ("tests/test_a.py", "tests/it's.py"))
        == "pytest -q tests/test_a.py 'tests/it'\"'\"'s.py'"
    )
    assert tests_command("make test", ("tests/test_a.py",)) == "make test"


# --- coding sessions as the producer of code phases ------------------------------------------


def session_turn(step: int, reply: str, attempt: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "phase": "implement",
        "role": "producer",
        "title": "shout",
        "step": step,
        "reply": reply,
    }
    if attempt is not None:
        rule["attempt"] = attempt
    return rule


def tool(name: str, **args: Any) -> str:
    return "```tool\n" + json.dumps({"name": name, "args": args}) + "\n```\n"


def test_implement_runs_a_builtin_agent_session_and_a_retry_resumes_it(tmp_path: Path) -> None:
    red_code = shout_code().replace("    return 0\n", "    return 0 if args.shout else 1\n")
    rules = [
        # attempt 1 reads the CLI and submits without a change: an objection
        session_turn(1, tool("read_file", path="greet/cli.py")),
        session_turn(2, "```submit\nNothing to do.\n```\n"),
        # attempt 2 resumes the same session (steps go on): writes code that breaks a test
        session_turn(3, tool("write_file", path="greet/cli.py", content=red_code)),
        session_turn(4, tool("run_command", command="curl http://example.com")),
        session_turn(5, "```submit\nAdded --shout.\n```\n"),
        # red CI starts fix-ci, whose own session repairs the exit code
        {
            "phase": "fix-ci",
            "role": "producer",
            "title": "shout",
            "step": 1,
            "reply": tool(
                "edit",
                path="greet/cli.py",
                search="return 0 if args.shout else 1",
                replace="return 0",
            ),
        },
        {
            "phase": "fix-ci",
            "role": "producer",
            "title": "shout",
            "step": 2,
            "reply": "```submit\nmain() returns 0 again.\n```\n",
        },
    ]
    extra = '\n[phases.implement]\nsession = "builtin"\n[phases.fix-ci]\nsession = "builtin"\n'
    project = sample_project(tmp_path / "repo", extra, rules=rules)
    feature = demo_ticket("feature")
    ticket_id = project.add("feature", feature["title"], feature["body"])
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    implement = attempts(detail, "implement")
    assert [a["verdict"]["passed"] for a in implement] == [False, True]
    assert implement[0]["verdict"]["objections"] == [
        "implementation.md: the session changed no file"
    ]
    report = rows(
        project,
        "SELECT a.text FROM attempts a JOIN steps s ON a.step_id = s.id "
        "WHERE s.ticket_id = ? AND s.phase = 'implement' AND a.number = 2",
        ticket_id,
    )[0][0]
    assert "exit: submitted" in report and "- greet/cli.py" in report
    assert "Commit: " in report and '+    parser.add_argument("--shout"' in report
    # every model turn of the sessions is a recorded call
    turns = rows(
        project,
        "SELECT phase, COUNT(*) FROM calls WHERE ticket_id = ? AND role = 'producer' "
        "AND phase IN ('implement', 'fix-ci') GROUP BY phase ORDER BY phase",
        ticket_id,
    )
    assert turns == [("fix-ci", 2), ("implement", 5)]
    # attempt 2's transcript carries attempt 1's history and every objection so far
    folder = project.root / ".shipline" / "sessions" / f"ticket-{ticket_id}"
    transcripts = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    second = next(t for t in transcripts if t["phase"] == "implement" and t["attempt"] == 2)
    contents = [m["content"] for m in second["messages"]]
    assert any(c.startswith("[read_file exit 0]") for c in contents)
    assert any("Every objection so far" in c and "changed no file" in c for c in contents)
    # every tool call is recorded; the network command was refused (exit 126)
    calls = [(r["name"], r["exit_code"]) for r in second["tool_records"]]
    assert calls == [("read_file", 0), ("write_file", 0), ("run_command", 126)]
    # red CI after the session went to a fix-ci session, and main got the green result
    assert [a["verdict"]["passed"] for a in attempts(detail, "fix-ci")] == [True]
    assert "    return 0\n" in git(project.root, "show", "main:greet/cli.py")
    assert_every_commit_is_green(project, tmp_path)


# --- four tickets at once ---------------------------------------------------------------------


def module_ticket_rules(n: int) -> list[dict[str, Any]]:
    """A hotfix adding greet/extra_N.py (its own file, so four of them never conflict)."""
    title = f"extra {n}"
    diagnosis = f"""\
## Reproduction
    $ python -c "from greet.extra_{n} import value"
    ModuleNotFoundError: No module named 'greet.extra_{n}'

## Root cause
greet has no extra_{n} module.

## Fix plan
Add greet/extra_{n}.py with `value()` returning {n}.

## Regression test
tests/test_extra_{n}.py: `value()` returns {n}.
"""
    tests = f"""\
### File: tests/test_extra_{n}.py
```python
from greet.extra_{n} import value


def test_value_is_{n}():
    assert value() == {n}
```
"""
    code = f"""\
### File: greet/extra_{n}.py
```python
def value() -> int:
    return {n}
```
"""
    review = "## Verdict\napprove\n\n## Notes\nAs diagnosed.\n"
    return [
        {"phase": phase, "role": "producer", "title": title, "reply": reply}
        for phase, reply in (
            ("diagnose", diagnosis),
            ("tests", tests),
            ("implement", code),
            ("review", review),
        )
    ]


@pytest.mark.slow
def test_four_tickets_run_in_parallel_in_their_own_worktrees_and_all_merge(
    tmp_path: Path,
) -> None:
    rules = [rule for n in range(1, 5) for rule in module_ticket_rules(n)]
    project = sample_project(tmp_path / "repo", rules=rules)
    ids = [project.add("hotfix", f"Add extra {n}", f"Module extra_{n}.") for n in range(1, 5)]
    project.cli("run", "--workers", "4")
    for ticket_id in ids:
        detail = project.show(ticket_id)
        assert detail["status"] == "done", (ticket_id, detail["handoff_reason"])
        assert detail["merge"]["target"] == "main" and detail["merge"]["url"] is None
    # each ticket had its own worktree and branch
    branches = rows(project, "SELECT message FROM events WHERE kind = 'workspace'")
    assert len(branches) == 4
    assert len({message for (message,) in branches}) == 4
    # the workers overlapped: some ticket started before another had finished
    spans = rows(
        project,
        "SELECT ticket_id, MIN(started_at), MAX(finished_at) FROM steps GROUP BY ticket_id",
    )
    overlapping = any(
        a_start < b_end and b_start < a_end
        for i, (_, a_start, a_end) in enumerate(spans)
        for (_, b_start, b_end) in spans[i + 1 :]
    )
    assert overlapping, spans
    # main got the four tickets, one green commit each, in some order
    log = main_log(project)
    assert len(log) == 5
    assert sorted(line.split(": ", 1)[1] for line in log[:4]) == [
        f"Add extra {n}" for n in range(1, 5)
    ]
    for n in range(1, 5):
        assert f"return {n}" in git(project.root, "show", f"main:greet/extra_{n}.py")
    assert sorted(ticket for (ticket,) in rows(project, "SELECT ticket_id FROM merges")) == ids
    assert_every_commit_is_green(project, tmp_path)


@pytest.mark.slow
def test_pr_mode_on_postgresql_pushes_each_branch_and_opens_one_pr_per_ticket(
    tmp_path: Path, pg_url: str, monkeypatch: Any
) -> None:
    """Two workers on the team backend (the merge lock is PostgreSQL's advisory lock). GitHub
    is unreachable here: `gh` is test_pull_requests' stand-in; the pushes are real."""
    from test_pull_requests import GH

    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    rules = [rule for n in (1, 2) for rule in module_ticket_rules(n)]
    project = sample_project(tmp_path / "repo", '\n[merge]\nmode = "pr"\n', rules, pg_url)
    git(project.root, "remote", "add", "origin", str(remote))
    git(project.root, "push", "-q", "origin", "main")
    state = tmp_path / "gh-state.json"
    state.write_text(json.dumps({"remote": str(remote), "prs": [], "calls": []}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(GH.format(python=sys.executable))
    (bin_dir / "gh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GH_STATE", str(state))

    ids = [project.add("hotfix", f"Add extra {n}", f"Module extra_{n}.") for n in (1, 2)]
    project.cli("run", "--workers", "2")
    prs = json.loads(state.read_text())["prs"]
    assert len(prs) == 2
    for ticket_id in ids:
        detail = project.show(ticket_id)
        assert detail["status"] == "done", detail["handoff_reason"]
        assert detail["merge"]["mode"] == "pr"
        assert detail["merge"]["url"].startswith("https://github.com/acme/widgets/pull/")
        shown = project.cli("ticket", "show", str(ticket_id)).stdout
        url, commit = detail["merge"]["url"], detail["merge"]["commit"]
        assert f"PR opened: {url} (into main, at {commit[:10]})" in shown
        (event,) = [e["message"] for e in detail["events"] if e["kind"] == "pr"]
        assert event.startswith("pull request https://github.com/acme/widgets/pull/")
        assert " opened: shipline/" in event
    import psycopg

    with psycopg.connect(pg_url) as conn:
        recorded = conn.execute(
            'SELECT ticket_id, mode, url, "commit" FROM merges ORDER BY ticket_id'
        ).fetchall()
    assert [(t, mode) for t, mode, _, _ in recorded] == [(i, "pr") for i in ids]
    assert sorted(url for _, _, url, _ in recorded) == sorted(pr["url"] for pr in prs)
    for _, _, url, commit in recorded:
        pr = next(pr for pr in prs if pr["url"] == url)
        # the PR's branch on the remote holds the judged, rebased commit
        assert git(remote, "rev-parse", f"refs/heads/{pr['head']}").strip() == commit
        assert pr["base"] == "main"
    # PR mode leaves the target to the forge: main is untouched
    assert len(main_log(project)) == 1


def test_a_hung_push_in_pr_mode_hands_the_ticket_off_with_the_reason(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The remote's receive-pack never answers: the push is killed at
    `[workspaces] git_network_timeout_s`, the ticket goes to a human saying so, and nothing of
    the push is left running (a worker's heartbeat would otherwise keep its lease forever)."""
    import time

    from test_git import assert_all_dead, hang_script
    from test_pull_requests import GH

    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    extra = '\n[merge]\nmode = "pr"\n\n[workspaces]\ngit_network_timeout_s = 2\n'
    project = sample_project(tmp_path / "repo", extra, module_ticket_rules(1))
    git(project.root, "remote", "add", "origin", str(remote))
    git(project.root, "push", "-q", "origin", "main")
    script, pids = hang_script(tmp_path, "receive-pack")
    git(project.root, "config", "remote.origin.receivepack", str(script))
    state = tmp_path / "gh-state.json"
    state.write_text(json.dumps({"remote": str(remote), "prs": [], "calls": []}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gh").write_text(GH.format(python=sys.executable))
    (bin_dir / "gh").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_GH_STATE", str(state))

    ticket_id = project.add("hotfix", "Add extra 1", "Module extra_1.")
    started = time.monotonic()
    project.cli("run")
    assert time.monotonic() - started < 90  # not the ten minutes the remote would take
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    reason = detail["handoff_reason"]
    branch = f"shipline/{ticket_id}-add-extra-1"
    assert reason.startswith(f"merge: cannot push {branch} to origin: `git push ")
    assert "did not finish in 2 s" in reason and "the remote did not answer" in reason
    assert "[workspaces] git_network_timeout_s" in reason
    assert_all_dead(pids)
    assert json.loads(state.read_text())["calls"] == []  # no pull request for an unpushed branch
    assert rows(project, "SELECT COUNT(*) FROM merges") == [(0,)]
    assert git(remote, "branch", "--list").strip() == "main"  # only what was pushed by hand


@pytest.mark.slow
def test_a_worker_killed_mid_session_is_resumed_where_the_session_stopped(
    tmp_path: Path,
) -> None:
    import signal
    import time

    code = shout_code()
    rules = [
        session_turn(1, tool("read_file", path="greet/cli.py")),
        session_turn(2, tool("write_file", path="greet/cli.py", content=code)),
        {**session_turn(3, tool("run_command", command="true")), "delay_s": 3},
        session_turn(4, "```submit\nAdded --shout.\n```\n"),
    ]
    extra = (
        '\n[phases.implement]\nsession = "builtin"\n'
        "\n[worker]\nlease_s = 1.0\nheartbeat_s = 0.25\npoll_s = 0.1\n"
    )
    project = sample_project(tmp_path / "repo", extra, rules=rules)
    feature = demo_ticket("feature")
    ticket_id = project.add("feature", feature["title"], feature["body"])
    folder = project.root / ".shipline" / "sessions" / f"ticket-{ticket_id}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "shipline", "work"],
        cwd=project.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # until step 2 is saved: step 3 is now in flight
            saved = list(folder.glob("*.json"))
            if saved and json.loads(saved[0].read_text() or "{}").get("steps") == 2:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the session never reached step 2")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    # the killed worker left the file it wrote, uncommitted, in the worktree
    worktree = tmp_path / "repo.worktrees" / str(ticket_id)
    assert "--shout" in (worktree / "greet" / "cli.py").read_text()

    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    [transcript] = [json.loads(p.read_text()) for p in folder.glob("*.json")]
    contents = [m["content"] for m in transcript["messages"]]
    assert any("interrupted and resumes here" in c for c in contents)
    # no step was done twice: one read, one write, one command, then the submit
    names = [r["name"] for r in transcript["tool_records"]]
    assert names == ["read_file", "write_file", "run_command"]
    assert transcript["steps"] == 4
    turns = rows(
        project,
        "SELECT estimated, COUNT(*) FROM calls WHERE ticket_id = ? AND phase = 'implement' "
        "AND role = 'producer' GROUP BY estimated ORDER BY estimated",
        ticket_id,
    )
    # four turns answered; the call the kill cut short stays on the bill as an estimate (it
    # was written before it was sent), and was not sent twice
    assert turns == [(0, 4), (1, 1)]
    assert "--shout" in git(project.root, "show", "main:greet/cli.py")


def test_a_failed_merge_goes_to_fix_ci_once_then_to_a_human(
    tmp_path: Path, store_url: str | None
) -> None:
    from shipline.engine import sql
    from shipline.engine.code import CodeOutcome
    from shipline.engine.loop import AttemptRunner, Claim
    from shipline.engine.project import open_project

    project = sample_project(tmp_path / "repo", db_url=store_url)
    ticket_id = project.add("hotfix", "Add extra 1", "Module extra_1.")
    opened = open_project(project.root, db=store_url)
    runner = AttemptRunner(opened)
    claim = Claim(step_id=0, ticket_id=ticket_id, phase="review", token="t", resumed=False)

    def failed_merge() -> CodeOutcome:
        return CodeOutcome(handoff="merge: conflicts in a.py", red="both sides", conflict=True)

    assert runner._fix_after_merge(claim, failed_merge()) is True
    # a failure fix-ci has nothing to work from (gh refused the PR) is a human's at once
    assert runner._fix_after_merge(claim, CodeOutcome(handoff="merge: gh failed")) is False
    with opened.store.transaction() as conn:  # what the verdict does: fix-ci after diagnose
        sql.insert_step(
            conn, ticket_id, 0, "fix-ci", attempts_allowed=2, origin="merge", context="both"
        )
    phases = project.show(ticket_id)["phases"]
    assert [(p["phase"], p["origin"]) for p in phases] == [
        ("diagnose", None),
        ("fix-ci", "merge"),
        ("tests", None),
        ("implement", None),
        ("review", None),
    ]
    second = failed_merge()
    assert runner._fix_after_merge(claim, second) is False
    assert second.handoff == (
        "merge: conflicts in a.py (fix-ci already had its one try after a failed merge)"
    )
    opened.close()


def test_a_missing_agent_cli_hands_the_ticket_off_naming_the_config_key(tmp_path: Path) -> None:
    extra = (
        '\n[phases.implement]\nsession = "cx"\n'
        '\n[agents.cx]\nkind = "codex"\ncommand = "/nonexistent/bin/codex"\n'
    )
    project = sample_project(tmp_path / "repo", extra, module_ticket_rules(1))
    ticket_id = project.add("hotfix", "Add extra 1", "Module extra_1.")
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    reason = detail["handoff_reason"]
    assert reason.startswith("implement: ") and "/nonexistent/bin/codex" in reason
    assert "[agents.cx] command" in reason


def test_a_session_without_a_judge_is_a_config_error(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo", None)
    (project.root / "shipline.toml").write_text(
        SCRIPTED_TOML + '\n[phases.implement]\nsession = "builtin"\n', encoding="utf-8"
    )
    result = project.cli("ticket", "list", expect=2)
    assert "[phases.implement] session = 'builtin' needs [judge] command" in result.stderr
