"""`shipline doctor`: is this project ready to work? Checks the config, the store, its disk,
git and the judge command, and says what it found. It changes nothing (a store behind the
current schema is reported, not migrated) and never stops at the first problem.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from shipline.config import CONFIG_FILE, Settings, find_config, load_settings
from shipline.errors import ShiplineError, StoreError
from shipline.store.db import Store
from shipline.store.migrate import SCHEMA_HEAD, current_revision
from shipline.workspaces.git import Git

# Less free space than this on the store's disk is a problem: a worker would soon stall.
LOW_DISK_BYTES = 64 * 1024 * 1024
# The shell words a judge command may start with that are not programs on PATH.
SHELL_WORDS = frozenset(
    {
        *("cd", "export", "set", "unset", "source", ".", "exec", "eval", "test", "[", "true"),
        *("false", "if", "for", "while", "until", "case", "{", "(", "!"),
    }
)
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Finding:
    """One check: what was checked, whether it is fine, what was found, and the fix."""

    check: str
    ok: bool
    detail: str
    fix: str = ""


def diagnose(start: Path, config: Path | None = None, db: str | None = None) -> list[Finding]:
    """Every check's finding, in a fixed order: config, store, disk, git, judge."""
    findings: list[Finding] = []
    settings, root = _config(start, config, findings)
    url = db or (settings.store.url if settings is not None else None)
    if url is None:
        findings.append(Finding("store", False, "not checked: no config", "fix the config first"))
    else:
        findings.extend(_store(url, root, settings))
    findings.append(_git(root))
    findings.append(_judge(settings, root))
    return findings


def _config(
    start: Path, config: Path | None, findings: list[Finding]
) -> tuple[Settings | None, Path]:
    path = config if config is not None else find_config(start.resolve())
    root = path.parent.resolve() if path is not None else start.resolve()
    if path is None:
        findings.append(
            Finding(
                "config",
                False,
                f"no {CONFIG_FILE} in {start.resolve()} or above",
                "run `shipline init`",
            )
        )
        return None, root
    if not path.is_file():
        findings.append(Finding("config", False, f"{path} does not exist", "check --config"))
        return None, root
    try:
        settings = load_settings(path)
    except ShiplineError as exc:
        findings.append(Finding("config", False, str(exc), f"correct {path}"))
        return None, root
    findings.append(Finding("config", True, f"{path} is valid"))
    return settings, root


def _store(url: str, root: Path, settings: Settings | None) -> list[Finding]:
    timeout = settings.store.busy_timeout_s if settings is not None else 5.0
    try:
        store = Store(url, root, read_only=True, busy_timeout_s=min(timeout, 5.0))
    except StoreError as exc:
        return [Finding("store", False, str(exc), "correct [store] url or --db")]
    try:
        found = [_schema(store)]
        if found[0].ok and store.dialect == "sqlite":
            found.append(_integrity(store))
        if store.path is not None and store.path.exists():
            found.append(_disk(store.path))
        return found
    finally:
        store.close()


def _schema(store: Store) -> Finding:
    where = store.display_url
    try:
        store.require()
        revision = current_revision(store.engine)
    except StoreError as exc:
        return Finding("store", False, str(exc))  # the message says the fix
    if revision is None:
        return Finding(
            "store", False, f"{where} has no shipline schema", "run `shipline init` to create it"
        )
    if revision != SCHEMA_HEAD:
        detail = f"{where} is at schema {revision}, this shipline at {SCHEMA_HEAD}"
        if revision > SCHEMA_HEAD:
            return Finding("store", False, detail, "upgrade shipline")
        return Finding("store", True, detail + ": the next command migrates it")
    return Finding("store", True, f"{where} reachable, schema {revision} (current)")


def _integrity(store: Store) -> Finding:
    """SQLite's `PRAGMA quick_check`: the b-trees and pages are whole (it reads every page)."""
    try:
        with store.engine.connect() as conn:
            rows = [str(r[0]) for r in conn.execute(text("PRAGMA quick_check"))]
    except StoreError as exc:
        return Finding("integrity", False, str(exc))
    if rows == ["ok"]:
        return Finding("integrity", True, "PRAGMA quick_check: ok")
    shown = "; ".join(rows[:3]) + (f" (and {len(rows) - 3} more)" if len(rows) > 3 else "")
    return Finding(
        "integrity",
        False,
        f"PRAGMA quick_check: {shown}",
        "restore the store from a backup, or move it away and run `shipline init`",
    )


def _disk(path: Path) -> Finding:
    free = shutil.disk_usage(path.parent).free
    detail = f"{free / 2**30:.1f} GiB free where the store is"
    if free < LOW_DISK_BYTES:
        return Finding("disk", False, detail, f"free space on the disk of {path.parent}")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return Finding("disk", False, f"{path} or its folder is not writable", f"chmod u+w {path}")
    return Finding("disk", True, detail)


def _git(root: Path) -> Finding:
    if shutil.which("git") is None:
        return Finding("git", False, "git is not on PATH", "install git")
    git = Git(root, timeout_s=10)
    try:
        inside = git.ok("rev-parse", "--is-inside-work-tree")
        branch = git.run("branch", "--show-current", check=False).stdout.strip() if inside else ""
    except ShiplineError as exc:
        return Finding("git", False, str(exc), "check the repository by hand")
    if not inside:
        return Finding(
            "git",
            False,
            f"{root} is not in a git work tree",
            "`git init` (tickets work in git worktrees under a judge)",
        )
    return Finding("git", True, f"a git work tree, on {branch or 'a detached HEAD'}")


def _judge(settings: Settings | None, root: Path) -> Finding:
    if settings is None:
        return Finding("judge", False, "not checked: no config", "fix the config first")
    command = settings.judge.command.strip()
    if not command:
        return Finding("judge", True, "no [judge] command: deliverables are judged by checks")
    program = judge_program(command)
    if program is None:
        return Finding("judge", True, f"`{command}` starts with a shell word: not checked")
    if "/" in program:
        candidate = Path(program) if Path(program).is_absolute() else root / program
        found = str(candidate) if os.access(candidate, os.X_OK) else None
    else:
        found = shutil.which(program)
    if found is None:
        return Finding(
            "judge",
            False,
            f"[judge] command runs {program!r}, which is not installed (not on PATH)",
            f"install {program}, or correct [judge] command",
        )
    return Finding("judge", True, f"[judge] command runs {found}")


def judge_program(command: str) -> str | None:
    """The program a shell command line runs first (after VAR=value and `env`), or None when
    it starts with a shell word (`cd x && …`) or cannot be split."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for word in words:
        if ASSIGNMENT.match(word) or word == "env":
            continue
        return None if word in SHELL_WORDS else word
    return None
