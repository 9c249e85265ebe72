"""What `shipline init` finds in a repository: the command its tests run with, and the branch
tickets merge into.

`detect_test_commands` and `decide_target` are pure decisions over what the repository holds
(`read_repo`, a few files' text, and `read_git_state`, read at the edge). Nothing is run: init
stays fast, and a test command is only written, never tried.

Several test commands can be found in one repository; they come back in this order, and the
first one is the judge: `make test` (a Makefile's `test` target is the project's own entry point,
which usually wraps the rest), pytest, `go test ./...`, `cargo test`, `npm test` (last: a
package.json often sits next to a backend only for front-end tooling).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shipline.workspaces.git import Git, WorkspaceError

ORDER = ("make", "pytest", "go", "cargo", "npm")
"""The order of preference when a repository has several test commands (documented above)."""

CONFIG_FILES = (
    "Makefile",
    "makefile",
    "GNUmakefile",
    "pyproject.toml",
    "pytest.ini",
    "setup.cfg",
    "tox.ini",
    "conftest.py",
    "go.mod",
    "Cargo.toml",
    "package.json",
    "package-lock.json",
    "npm-shrinkwrap.json",
)
"""The files whose text (or presence) tells how a repository's tests run."""

VENV_PYTHONS = (".venv/bin/python", "venv/bin/python")
"""A project's own virtual environment, in the order looked for."""

TEST_DIRS = ("tests", "test")
_MAX_CHARS = 200_000  # a config file is read this far (a generated Makefile can be huge)
_MAX_TEST_SCAN = 2_000  # files looked at under a test folder before giving up
_NPM_DEFAULT_TEST = "no test specified"  # `npm init`'s placeholder: echo "Error: ..." && exit 1


@dataclass(frozen=True)
class DetectedCommand:
    """A test command found in the repository, and the file that says so."""

    tool: str  # one of ORDER
    command: str  # a shell command, run in the worktree's root
    evidence: str  # e.g. "pyproject.toml [tool.pytest.ini_options]"
    setup: tuple[str, ...] = ()  # what a fresh worktree needs first ([workspaces] setup)
    notes: tuple[str, ...] = ()  # why the command looks the way it does (for the comments)


@dataclass(frozen=True)
class GitState:
    """Where the repository's HEAD is, as far as init cares."""

    kind: Literal["branch", "unborn", "detached", "no-git"]
    branch: str = ""  # the checked-out branch ("branch", "unborn")
    branches: tuple[str, ...] = ()  # local branches (to pick a target when HEAD is detached)


@dataclass(frozen=True)
class Target:
    """`[merge] target` for init, whether a judge can work there yet, and what to tell."""

    branch: str
    judge_ready: bool  # False: the detected command is written commented out
    note: str = ""


# ---- the decisions (pure) ------------------------------------------------------------------


def detect_test_commands(
    files: Mapping[str, str], root: str, python: str = "python"
) -> list[DetectedCommand]:
    """Every test command `files` (relative path → text, "" for a file only present) shows, in
    ORDER. `root` is the repository's absolute path (a venv's interpreter is named by it, so
    the judge finds it from any worktree); `python` is the interpreter when there is no venv."""
    found = (
        _make(files),
        _pytest(files, root, python),
        _go(files),
        _cargo(files),
        _npm(files),
    )
    return [command for command in found if command is not None]


def decide_target(state: GitState) -> Target:
    """The branch tickets start from and merge into: the one checked out at init."""
    if state.kind == "branch":
        return Target(state.branch, True)
    if state.kind == "unborn":
        return Target(
            state.branch,
            True,
            f"the repository has no commits yet: commit your work before running tickets "
            f"(each ticket's worktree starts from the last commit of {state.branch})",
        )
    if state.kind == "detached":
        usual = next((b for b in ("main", "master") if b in state.branches), "")
        if usual:
            return Target(
                usual,
                True,
                f"HEAD is detached: [merge] target is {usual!r}; change it in shipline.toml if "
                "tickets should merge into another branch",
            )
        return Target(
            "main",
            False,
            "HEAD is detached and there is no main or master branch: set [merge] target to the "
            "branch tickets should merge into, then uncomment [judge] command",
        )
    return Target(
        "main",
        False,
        "not a git repository: the judge needs one (each ticket works in a git worktree of its "
        "own). Run `git init`, commit, then uncomment [judge] command in shipline.toml",
    )


def _make(files: Mapping[str, str]) -> DetectedCommand | None:
    for name in ("GNUmakefile", "makefile", "Makefile"):  # GNU make's own order
        if name in files:
            if _has_target(files[name], "test"):
                return DetectedCommand("make", "make test", f"{name} `test` target")
            return None  # make reads only the first of these
    return None


def _has_target(makefile: str, target: str) -> bool:
    """Whether a rule names `target` (`test:`, `check test::`), not a variable (`test := x`)."""
    for line in makefile.splitlines():
        if not line or line[0] in "\t#. " or ":" not in line:
            continue
        names, _, rest = line.partition(":")
        if rest.startswith("=") or "=" in names:
            continue
        if target in names.split():
            return True
    return False


def _pytest_evidence(files: Mapping[str, str]) -> str:
    if "pyproject.toml" in files:
        text = files["pyproject.toml"]
        try:
            tool = tomllib.loads(text).get("tool", {})
            table = tool.get("pytest") if isinstance(tool, dict) else None
            ini, native = isinstance(table, dict) and "ini_options" in table, bool(table)
        except tomllib.TOMLDecodeError:  # broken: pytest would refuse it, but it is pytest's
            ini, native = "[tool.pytest.ini_options" in text, "[tool.pytest" in text
        if ini:
            return "pyproject.toml [tool.pytest.ini_options]"
        if native:
            return "pyproject.toml [tool.pytest]"
    if "pytest.ini" in files:
        return "pytest.ini"
    if re.search(r"^\[tool:pytest\]", files.get("setup.cfg", ""), re.MULTILINE):
        return "setup.cfg [tool:pytest]"
    tox = files.get("tox.ini")
    if tox is not None:
        if re.search(r"^\[pytest\]", tox, re.MULTILINE):
            return "tox.ini [pytest]"
        if "pytest" in tox:
            return "tox.ini (runs pytest)"
    if "conftest.py" in files:
        return "conftest.py"
    for path in files:
        folder, _, name = path.rpartition("/")
        if folder.split("/")[0] in TEST_DIRS and _is_test_module(name):
            return path
    return ""


def _is_test_module(name: str) -> bool:
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def _pytest(files: Mapping[str, str], root: str, python: str) -> DetectedCommand | None:
    evidence = _pytest_evidence(files)
    if not evidence:
        return None
    notes = []
    venv = next((v for v in VENV_PYTHONS if v in files), "")
    if venv:
        python = shlex.quote(f"{root.rstrip('/')}/{venv}")
        notes.append(
            f"Python: the project's venv ({venv}), named by its absolute path so the judge "
            "finds it from each ticket's worktree; edit it if this file is shared across "
            "machines."
        )
    command = f"{python} -m pytest -q"
    if any(path.startswith("src/") and path.endswith("/__init__.py") for path in files):
        command = f"PYTHONPATH=src {command}"
        notes.append(
            "PYTHONPATH=src: a worktree's tests import the worktree's own src/, not the "
            "package a venv may have installed (editable) from this checkout."
        )
    return DetectedCommand("pytest", command, evidence, notes=tuple(notes))


def _go(files: Mapping[str, str]) -> DetectedCommand | None:
    return DetectedCommand("go", "go test ./...", "go.mod") if "go.mod" in files else None


def _cargo(files: Mapping[str, str]) -> DetectedCommand | None:
    return DetectedCommand("cargo", "cargo test", "Cargo.toml") if "Cargo.toml" in files else None


def _npm(files: Mapping[str, str]) -> DetectedCommand | None:
    if "package.json" not in files:
        return None
    try:
        package = json.loads(files["package.json"])
    except ValueError:
        return None
    scripts = package.get("scripts") if isinstance(package, dict) else None
    test = scripts.get("test") if isinstance(scripts, dict) else None
    if not isinstance(test, str) or not test.strip() or _NPM_DEFAULT_TEST in test:
        return None
    setup: tuple[str, ...] = ()
    if package.get("dependencies") or package.get("devDependencies"):
        locked = "package-lock.json" in files or "npm-shrinkwrap.json" in files
        setup = ("npm ci",) if locked else ("npm install",)
    return DetectedCommand("npm", "npm test", "package.json scripts.test", setup=setup)


# ---- the edges (I/O) -----------------------------------------------------------------------


def read_repo(root: Path) -> dict[str, str]:
    """What `detect_test_commands` looks at: the text of CONFIG_FILES, and "" for a venv's
    interpreter, the first test module under tests/ or test/, and a src/ package."""
    files: dict[str, str] = {}
    for name in CONFIG_FILES:
        path = root / name
        if path.is_file():
            try:
                with path.open(encoding="utf-8", errors="replace") as handle:
                    files[name] = handle.read(_MAX_CHARS)
            except OSError:  # unreadable: as good as absent
                continue
    for name in VENV_PYTHONS:
        if (root / name).is_file():
            files[name] = ""
    for folder in TEST_DIRS:
        found = _first_test_module(root / folder)
        if found is not None:
            files[found.relative_to(root).as_posix()] = ""
            break
    src = root / "src"
    if src.is_dir():
        try:
            packages = sorted(p for p in src.iterdir() if (p / "__init__.py").is_file())
        except OSError:
            packages = []
        if packages:
            files[(packages[0] / "__init__.py").relative_to(root).as_posix()] = ""
    return files


def _first_test_module(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    try:
        for seen, path in enumerate(folder.rglob("*.py")):
            if seen >= _MAX_TEST_SCAN:
                return None
            if _is_test_module(path.name) and path.is_file():
                return path
    except OSError:
        return None
    return None


def python_on_path() -> str:
    """The interpreter a judge command names when the project has no venv of its own."""
    return "python" if shutil.which("python") else "python3"


def read_git_state(root: Path) -> GitState:
    """Is `root` a git repository, and is a branch checked out (with commits)?"""
    git = Git(root, timeout_s=30)
    try:
        if not git.ok("rev-parse", "--is-inside-work-tree"):
            return GitState("no-git")
        branch = git.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip()
        if branch:
            has_commit = git.ok("rev-parse", "--verify", "--quiet", "HEAD")
            return GitState("branch" if has_commit else "unborn", branch)
        listed = git.run("for-each-ref", "--format=%(refname:short)", "refs/heads", check=False)
        return GitState("detached", branches=tuple(listed.stdout.split()))
    except WorkspaceError:  # git missing, or too slow: treated as no repository
        return GitState("no-git")
