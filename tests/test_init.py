"""`shipline init` on real repositories: the test command it detects, the branch it merges into,
and a shipline.toml that loads; an existing shipline.toml is never changed.

Detection and the merge target are pure decisions, pinned by tables; the CLI runs end to end on
real temp repositories (the ledger repository of tests/second_repo.py among them).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest

from conftest import git, run_cli
from second_repo import write_ledger_repo
from shipline.config import load_settings, parse_settings
from shipline.engine.detect import (
    DetectedCommand,
    GitState,
    Target,
    decide_target,
    detect_test_commands,
    read_repo,
)
from shipline.engine.setup import CONFIG_TEMPLATE, SECTIONS, render_sections
from shipline.process import run_command

ROOT = "/srv/repo"
PYPROJECT_PYTEST = '[project]\nname = "x"\n\n[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'
NPM_TEST = json.dumps({"scripts": {"test": "node --test"}})
NPM_DEFAULT = json.dumps({"scripts": {"test": 'echo "Error: no test specified" && exit 1'}})
NPM_WITH_DEPS = json.dumps({"scripts": {"test": "jest"}, "devDependencies": {"jest": "^30"}})

# (what the repository holds, the commands detected in order, the first one's evidence)
DETECTION: list[tuple[str, dict[str, str], list[str], str]] = [
    ("empty", {}, [], ""),
    ("readme only", {"README.md": "# x"}, [], ""),
    (
        "pyproject pytest table",
        {"pyproject.toml": PYPROJECT_PYTEST},
        ["python -m pytest -q"],
        "pyproject.toml [tool.pytest.ini_options]",
    ),
    (
        "pyproject native pytest table",
        {"pyproject.toml": '[tool.pytest]\nminversion = "9.0"\n'},
        ["python -m pytest -q"],
        "pyproject.toml [tool.pytest]",
    ),
    ("pyproject without pytest", {"pyproject.toml": '[project]\nname = "x"\n'}, [], ""),
    (
        "broken pyproject naming pytest",
        {"pyproject.toml": "[tool.pytest.ini_options\n"},
        ["python -m pytest -q"],
        "pyproject.toml [tool.pytest.ini_options]",
    ),
    ("pytest.ini", {"pytest.ini": "[pytest]\n"}, ["python -m pytest -q"], "pytest.ini"),
    (
        "setup.cfg tool:pytest",
        {"setup.cfg": "[metadata]\nname = x\n\n[tool:pytest]\naddopts = -q\n"},
        ["python -m pytest -q"],
        "setup.cfg [tool:pytest]",
    ),
    ("setup.cfg without pytest", {"setup.cfg": "[metadata]\nname = x\n"}, [], ""),
    (
        "tox.ini pytest section",
        {"tox.ini": "[tox]\nenvlist = py311\n\n[pytest]\naddopts = -q\n"},
        ["python -m pytest -q"],
        "tox.ini [pytest]",
    ),
    (
        "tox.ini running pytest",
        {"tox.ini": "[testenv]\ncommands = pytest {posargs}\n"},
        ["python -m pytest -q"],
        "tox.ini (runs pytest)",
    ),
    ("tox.ini without pytest", {"tox.ini": "[testenv]\ncommands = nose2\n"}, [], ""),
    (
        "tests folder test_*.py",
        {"tests/unit/test_core.py": ""},
        ["python -m pytest -q"],
        "tests/unit/test_core.py",
    ),
    (
        "test folder *_test.py",
        {"test/core_test.py": ""},
        ["python -m pytest -q"],
        "test/core_test.py",
    ),
    ("tests folder helper only", {"tests/helpers.py": ""}, [], ""),
    (
        "project venv",
        {"pytest.ini": "", ".venv/bin/python": ""},
        ["/srv/repo/.venv/bin/python -m pytest -q"],
        "pytest.ini",
    ),
    (
        "venv folder",
        {"pytest.ini": "", "venv/bin/python": ""},
        ["/srv/repo/venv/bin/python -m pytest -q"],
        "pytest.ini",
    ),
    (
        "src layout with a venv",
        {"pytest.ini": "", ".venv/bin/python": "", "src/pkg/__init__.py": ""},
        ["PYTHONPATH=src /srv/repo/.venv/bin/python -m pytest -q"],
        "pytest.ini",
    ),
    ("go.mod", {"go.mod": "module x\n\ngo 1.22\n"}, ["go test ./..."], "go.mod"),
    ("Cargo.toml", {"Cargo.toml": '[package]\nname = "x"\n'}, ["cargo test"], "Cargo.toml"),
    ("package.json test", {"package.json": NPM_TEST}, ["npm test"], "package.json scripts.test"),
    ("package.json npm default", {"package.json": NPM_DEFAULT}, [], ""),
    ("package.json no scripts", {"package.json": '{"name": "x"}'}, [], ""),
    ("package.json empty test", {"package.json": '{"scripts": {"test": " "}}'}, [], ""),
    ("package.json not json", {"package.json": "{not json"}, [], ""),
    ("package.json an array", {"package.json": "[1, 2]"}, [], ""),
    (
        "Makefile test target",
        {"Makefile": "test: lint\n\tpytest\n"},
        ["make test"],
        "Makefile `test` target",
    ),
    (
        "makefile test target",
        {"makefile": "test:\n\tgo test\n"},
        ["make test"],
        "makefile `test` target",
    ),
    (
        "Makefile several targets",
        {"Makefile": "check test: build\n\t./t\n"},
        ["make test"],
        "Makefile `test` target",
    ),
    (
        "Makefile double colon",
        {"Makefile": "test::\n\t./t\n"},
        ["make test"],
        "Makefile `test` target",
    ),
    ("Makefile only phony", {"Makefile": ".PHONY: test\nall:\n\tcc x.c\n"}, [], ""),
    ("Makefile variable", {"Makefile": "test := x\ntest ?= y\nall:\n\tcc\n"}, [], ""),
    ("Makefile tests target", {"Makefile": "tests:\n\t./t\n"}, [], ""),
    (
        "GNUmakefile shadows Makefile",
        {"GNUmakefile": "all:\n\tcc\n", "Makefile": "test:\n\t./t\n"},
        [],
        "",
    ),
    (
        "several, in the documented order",
        {
            "package.json": NPM_TEST,
            "go.mod": "module x\n",
            "pyproject.toml": PYPROJECT_PYTEST,
            "Makefile": "test:\n\t./t\n",
            "Cargo.toml": "",
        },
        ["make test", "python -m pytest -q", "go test ./...", "cargo test", "npm test"],
        "Makefile `test` target",
    ),
    (
        "python and npm",
        {"package.json": NPM_TEST, "pytest.ini": ""},
        ["python -m pytest -q", "npm test"],
        "pytest.ini",
    ),
]


@pytest.mark.parametrize(
    ("files", "commands", "evidence"),
    [case[1:] for case in DETECTION],
    ids=[case[0] for case in DETECTION],
)
def test_detection_finds_the_test_commands_a_repository_holds(
    files: dict[str, str], commands: list[str], evidence: str
) -> None:
    found = detect_test_commands(files, ROOT)
    assert [c.command for c in found] == commands
    assert (found[0].evidence if found else "") == evidence


def test_a_venv_under_a_path_with_spaces_is_quoted() -> None:
    found = detect_test_commands({"pytest.ini": "", ".venv/bin/python": ""}, "/srv/my repo")
    assert found[0].command == "'/srv/my repo/.venv/bin/python' -m pytest -q"
    assert shlex.split(found[0].command)[0] == "/srv/my repo/.venv/bin/python"


def test_without_a_venv_the_interpreter_on_path_runs_pytest() -> None:
    found = detect_test_commands({"pytest.ini": ""}, ROOT, python="python3")
    assert found[0].command == "python3 -m pytest -q"


@pytest.mark.parametrize(
    ("files", "setup"),
    [
        ({"package.json": NPM_TEST}, ()),
        ({"package.json": NPM_WITH_DEPS}, ("npm install",)),
        ({"package.json": NPM_WITH_DEPS, "package-lock.json": "{}"}, ("npm ci",)),
        ({"package.json": NPM_WITH_DEPS, "npm-shrinkwrap.json": "{}"}, ("npm ci",)),
    ],
    ids=["no dependencies", "dependencies", "lockfile", "shrinkwrap"],
)
def test_npm_worktrees_install_dependencies_first(
    files: dict[str, str], setup: tuple[str, ...]
) -> None:
    assert detect_test_commands(files, ROOT)[0].setup == setup


TARGETS: list[tuple[str, GitState, str, bool, str]] = [
    ("on a branch", GitState("branch", "trunk"), "trunk", True, ""),
    ("no commits yet", GitState("unborn", "main"), "main", True, "no commits yet"),
    (
        "detached, main exists",
        GitState("detached", branches=("feature", "main")),
        "main",
        True,
        "HEAD is detached",
    ),
    ("detached, master exists", GitState("detached", branches=("master",)), "master", True, ""),
    ("detached, no usual branch", GitState("detached", branches=("x",)), "main", False, "detached"),
    ("not a git repository", GitState("no-git"), "main", False, "not a git repository"),
]


@pytest.mark.parametrize(
    ("state", "branch", "ready", "note"),
    [case[1:] for case in TARGETS],
    ids=[case[0] for case in TARGETS],
)
def test_the_merge_target_is_the_branch_checked_out_at_init(
    state: GitState, branch: str, ready: bool, note: str
) -> None:
    target = decide_target(state)
    assert (target.branch, target.judge_ready) == (branch, ready)
    assert note in target.note
    assert bool(target.note) == (state.kind != "branch")


NPM = DetectedCommand("npm", "npm test", "package.json scripts.test", setup=("npm ci",))
PYTEST = DetectedCommand("pytest", '"odd" python -m pytest -q', "pytest.ini", notes=("a note",))


@pytest.mark.parametrize(
    ("found", "target"),
    [
        ([], Target("main", True)),
        ([NPM], Target("trunk", True)),
        ([PYTEST, NPM], Target("release/2.x", True)),
        ([PYTEST], Target("main", False, "not a git repository: run git init")),
    ],
    ids=["nothing found", "npm", "pytest then npm", "judge not ready"],
)
def test_the_written_sections_load_as_settings(
    found: list[DetectedCommand], target: Target
) -> None:
    text = CONFIG_TEMPLATE + "\n" + render_sections(found, target)
    settings = parse_settings(tomllib.loads(text), "shipline.toml")
    chosen = found[0] if found and target.judge_ready else None
    assert settings.judge.command == (chosen.command if chosen else "")
    assert settings.merge.target == target.branch
    assert settings.workspaces.setup == list(chosen.setup if chosen else ())
    for other in found[1:]:  # the others are named in the comments
        assert f"#   command = {json.dumps(other.command)}" in text
    if found and not target.judge_ready:
        assert f"# command = {json.dumps(found[0].command)}" in text
        assert target.note in text
    for section in SECTIONS:  # each section comes with its explanation
        assert f"# [{section}]: " in text


# ---- the real CLI on real repositories --------------------------------------------------------


def commit_all(root: Path, branch: str = "main") -> None:
    git(root, "init", "-q", "-b", branch)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")


def init(root: Path, expect: int = 0) -> tuple[dict[str, Any], str]:
    """`shipline init --json` and then `shipline init` (a second run: the file is kept)."""
    first = json.loads(run_cli(root, "init", "--json", expect=expect).stdout)
    return first, run_cli(root, "init").stdout


def project_venv(root: Path) -> Path:
    """A real venv in the repository whose site-packages reach this test run's (for pytest)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")], check=True)
    purelib = Path(
        subprocess.run(
            [
                str(root / ".venv/bin/python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (purelib / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return root / ".venv" / "bin" / "python"


def test_init_on_the_ledger_repo_writes_a_pytest_judge_on_its_venv_that_passes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ledger"
    root.mkdir()
    write_ledger_repo(root)
    (root / ".gitignore").write_text(".venv/\n", encoding="utf-8")
    commit_all(root, branch="trunk")
    python = project_venv(root)

    done, again = init(root)
    assert done["created"] is True
    assert done["judge"] == f"{python} -m pytest -q"
    assert done["detected"][0]["evidence"] == "pyproject.toml [tool.pytest.ini_options]"
    assert done["target"] == "trunk"  # the branch checked out, not a default
    assert done["notes"] == [] and done["missing"] == []
    settings = load_settings(root / "shipline.toml")
    assert settings.judge.command == done["judge"]
    assert settings.merge.target == "trunk"
    text = (root / "shipline.toml").read_text()
    assert "the project's venv (.venv/bin/python)" in text.replace("\n# ", " ")
    # the judge command passes on the repository, as written
    result = run_command(settings.judge.command, root, 120)
    assert result.ok, result.log
    assert "6 passed" in result.log
    # the second run keeps the file and says so
    assert "kept the existing" in again
    assert f"judge: {python} -m pytest -q" in again
    assert (root / "shipline.toml").read_text() == text


REPOS: list[tuple[str, dict[str, str], str, list[str]]] = [
    (
        "go",
        {"go.mod": "module example.com/x\n\ngo 1.22\n", "x.go": "package x\n"},
        "go test ./...",
        [],
    ),
    (
        "npm",
        {
            "package.json": json.dumps(
                {"name": "x", "scripts": {"test": "node --test"}, "devDependencies": {"y": "1"}}
            ),
            "package-lock.json": "{}",
        },
        "npm test",
        ["npm ci"],
    ),
    ("make", {"Makefile": "build:\n\tcc x.c\n\ntest: build\n\t./x --self-test\n"}, "make test", []),
    ("cargo", {"Cargo.toml": '[package]\nname = "x"\nversion = "0.1.0"\n'}, "cargo test", []),
]


@pytest.mark.parametrize(
    ("files", "command", "setup"), [r[1:] for r in REPOS], ids=[r[0] for r in REPOS]
)
def test_init_writes_the_detected_command_as_the_judge(
    tmp_path: Path, files: dict[str, str], command: str, setup: list[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    commit_all(tmp_path)
    out = run_cli(tmp_path, "init").stdout
    assert f"judge: {command} (" in out
    assert "merge target: main" in out
    settings = load_settings(tmp_path / "shipline.toml")
    assert settings.judge.command == command
    assert settings.merge.target == "main"
    assert settings.workspaces.setup == setup


def test_init_with_nothing_detected_says_code_phases_are_judged_on_text_alone(
    tmp_path: Path,
) -> None:
    (tmp_path / "README.md").write_text("# notes\n", encoding="utf-8")
    commit_all(tmp_path)
    out = run_cli(tmp_path, "init").stdout
    assert "no test command detected" in out
    assert "judged on their text alone" in out
    assert "nothing is applied to the repository" in out
    assert load_settings(tmp_path / "shipline.toml").judge.command == ""


def test_an_existing_shipline_toml_is_kept_and_init_prints_what_it_lacks(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    commit_all(tmp_path, branch="develop")
    mine = '# my own settings\n[merge]\ntarget = "release"\n'
    (tmp_path / "shipline.toml").write_text(mine, encoding="utf-8")

    done, again = init(tmp_path)
    assert done["created"] is False
    assert (tmp_path / "shipline.toml").read_text() == mine  # not one byte changed
    assert done["missing"] == ["judge", "workspaces"]
    assert done["judge"] == "" and done["target"] == "release"  # what is in effect
    assert "kept the existing" in again
    assert "shipline.toml has no [judge], [workspaces]" in again
    assert f"Detected {done['detected'][0]['command']} (pytest.ini), not set" in again
    assert "\n[judge]\n" in done["suggestion"] and "\n[merge]\n" not in done["suggestion"]
    # what it prints, added by hand, makes a file that loads with the detected judge
    added = tmp_path / "added.toml"
    added.write_text(mine + "\n" + done["suggestion"], encoding="utf-8")
    settings = load_settings(added)
    assert settings.judge.command == done["detected"][0]["command"]
    assert settings.merge.target == "release"


@pytest.mark.parametrize(
    ("prepare", "note", "target", "judge_set"),
    [
        ("no git", "not a git repository", "main", False),
        ("no commits", "the repository has no commits yet", "work", True),
        ("detached", "HEAD is detached: [merge] target is 'main'", "main", True),
    ],
)
def test_init_explains_a_repository_it_cannot_merge_into_yet(
    tmp_path: Path, prepare: str, note: str, target: str, judge_set: bool
) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    if prepare == "no commits":
        git(tmp_path, "init", "-q", "-b", "work")
    elif prepare == "detached":
        commit_all(tmp_path)
        git(tmp_path, "checkout", "-q", "--detach")
    out = run_cli(tmp_path, "init").stdout
    assert f"note: {note}" in out
    assert f"merge target: {target}" in out
    settings = load_settings(tmp_path / "shipline.toml")
    assert settings.merge.target == target
    assert bool(settings.judge.command) is judge_set
    if not judge_set:  # the detected command waits, commented out, with the reason
        text = (tmp_path / "shipline.toml").read_text()
        assert '# command = "' in text and "-m pytest -q" in text
        assert "judge: none. Detected" in out


def test_init_on_a_missing_folder_is_one_clear_line(tmp_path: Path) -> None:
    out = run_cli(tmp_path, "init", str(tmp_path / "nowhere"), expect=2)
    assert "is not a directory" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_init_help_explains_detection_and_the_kept_file(tmp_path: Path) -> None:
    out = run_cli(tmp_path, "init", "--help").stdout
    for words in ("pytest", "go test", "cargo test", "npm test", "Makefile", "never changed"):
        assert words in out


def test_read_repo_finds_a_nested_test_module_and_the_venv(tmp_path: Path) -> None:
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_a.py").write_text("", encoding="utf-8")
    (tmp_path / "tests" / "conftest_helpers.py").write_text("", encoding="utf-8")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").write_text("", encoding="utf-8")
    files = read_repo(tmp_path)
    assert "tests/unit/test_a.py" in files
    assert ".venv/bin/python" in files
    found = detect_test_commands(files, str(tmp_path))
    assert found[0].command == f"{tmp_path}/.venv/bin/python -m pytest -q"
