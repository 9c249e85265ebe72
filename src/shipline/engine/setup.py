"""`shipline init`: write a commented shipline.toml and create the store.

The `[judge]`, `[merge]` and `[workspaces]` sections come from what the repository holds
(engine/detect.py): its test command and its checked-out branch. An existing shipline.toml is
never changed: the sections it lacks are returned as text to add, and init prints them.
"""

from __future__ import annotations

import json
import textwrap
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shipline.config import CONFIG_FILE, STATE_DIR, load_settings
from shipline.engine.detect import (
    ORDER,
    DetectedCommand,
    Target,
    decide_target,
    detect_test_commands,
    python_on_path,
    read_git_state,
    read_repo,
)
from shipline.errors import ConfigError
from shipline.store.db import open_store
from shipline.workspaces.git import Git, WorkspaceError

CONFIG_TEMPLATE = """\
# shipline configuration. Every key is optional; docs/config.md lists them all with defaults.

[store]
# SQLite (WAL) by default; a team shares PostgreSQL: url = "postgresql://user@host:5432/db"
url = "sqlite:///.shipline/shipline.db"

# Providers: where completions come from. The embedded default needs no key and no network.
[providers.local]
kind = "local"            # llama.cpp; model_path = "/path/to/any.gguf" to use another GGUF
model = "SmolLM2-135M-Instruct"

# Tiers map to ordered provider chains (the first that answers wins).
# SmolLM2-135M is weak: point "top" and "mid" at a stronger model for real work.
[tiers]
top = ["local"]
mid = ["local"]
cheap = ["local"]
local = ["local"]

# Routes: ticket kind (or "KIND.laneN") -> phases.
[routes]
feature = ["discovery", "techspec", "plan", "tests", "implement", "review"]
hotfix = ["diagnose", "tests", "implement", "review"]
epic = ["discovery", "techspec", "split"]

# Per-phase settings, e.g.:
# [phases.plan]
# tier = "top"
# max_attempts = 3
# input_token_budget = 3000
"""

SECTIONS = ("judge", "merge", "workspaces")
"""The sections init writes from what the repository holds, in this order."""

NO_JUDGE = (
    "without a judge, code phases (tests, implement, fix-ci) are judged on their text alone "
    "and nothing is applied to the repository"
)
LOOKED_FOR = (
    "a Makefile `test` target, pytest (pyproject.toml, pytest.ini, setup.cfg, tox.ini, "
    "conftest.py, tests/test_*.py), go.mod, Cargo.toml, package.json scripts.test"
)


@dataclass(frozen=True)
class InitResult:
    """What init did: the config written or kept, what it found, what to tell the user."""

    created: bool  # False: an existing shipline.toml was kept, unchanged
    store_url: str
    judge: str  # [judge] command now in effect ("" none)
    target: str  # [merge] target now in effect
    found: tuple[DetectedCommand, ...]  # every test command detected, the preferred first
    notes: tuple[str, ...]  # about the repository's git state
    missing: tuple[str, ...]  # sections a kept shipline.toml lacks (not written)
    suggestion: str  # the TOML text of those sections, to add by hand


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _comment(text: str) -> list[str]:
    """`text` as TOML comment lines of at most 92 characters."""
    return ["# " + line for line in textwrap.wrap(text, 90, break_on_hyphens=False)]


def _toml_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def render_sections(
    found: Sequence[DetectedCommand],
    target: Target,
    sections: Sequence[str] = SECTIONS,
) -> str:
    """The commented TOML of `sections` for a repository with these test commands (the first
    is the judge) and this merge target. Pure."""
    parts = []
    if "judge" in sections:
        parts.append(_judge_section(found, target))
    if "merge" in sections:
        parts.append(_merge_section(target))
    if "workspaces" in sections:
        parts.append(_workspaces_section(found[0] if found and target.judge_ready else None))
    return "\n".join(parts)


def _judge_section(found: Sequence[DetectedCommand], target: Target) -> str:
    lines = [
        "# [judge]: what decides \"done\", the project's own test command, run in each ticket's",
        "# git worktree. Set, it turns on the code path: the tests phase writes tests that must",
        "# fail first (then they are locked), implement must turn this command green, and a",
        "# finished ticket is merged (see [merge]). Empty: no judge; code phases are judged on",
        "# their text alone and nothing is applied to the repository.",
    ]
    if not found:
        lines += [
            f"# Nothing detected (looked for {LOOKED_FOR}).",
            '# Set your CI command, e.g. "python -m pytest -q", "npm test", "make check".',
            "[judge]",
            'command = ""',
        ]
    else:
        chosen, others = found[0], found[1:]
        order = ", ".join(ORDER)
        lines += _comment(
            f"Detected: {chosen.tool} ({chosen.evidence}); preference order: {order}."
        )
        for note in chosen.notes:
            lines += _comment(note)
        if others:
            lines.append("# Also found (to use one instead, replace the command):")
            for other in others:
                needs = (
                    f"; with [workspaces] setup = {_toml_list(other.setup)}" if other.setup else ""
                )
                lines.append(
                    f"#   command = {_toml_string(other.command)}   # {other.evidence}{needs}"
                )
        lines.append("[judge]")
        if target.judge_ready:
            lines.append(f"command = {_toml_string(chosen.command)}")
        else:
            lines += [*_comment(target.note), 'command = ""']
            lines.append(f"# command = {_toml_string(chosen.command)}")
    lines += [
        "# Seconds before the command is killed with all its processes (a timeout is a red run).",
        "timeout_s = 900",
        "",
    ]
    return "\n".join(lines)


def _merge_section(target: Target) -> str:
    return "\n".join(
        [
            "# [merge]: where a finished ticket goes once review passes with a green judge.",
            '# "merge": squash the ticket\'s branch, rebase it onto target, run the judge again,',
            '# then fast-forward target (one merge at a time). "pr": the same, then push the',
            "# branch to remote and open one pull request with gh (the forge merges it).",
            "[merge]",
            'mode = "merge"',
            "# The branch tickets start from and merge into (the one checked out at init).",
            f"target = {_toml_string(target.branch)}",
            "# pr mode only: the remote the branch is pushed to.",
            'remote = "origin"',
            "",
        ]
    )


def _workspaces_section(judge: DetectedCommand | None) -> str:
    setup = _toml_list(judge.setup if judge else ())
    lines = [
        "# [workspaces]: each ticket works in a git worktree of its own, on branch",
        "# shipline/<id>-<slug>, made when its first code phase runs.",
        "[workspaces]",
        '# Where the worktrees go. Empty: "<repo>.worktrees" next to the repository.',
        'root = ""',
        "# Shell commands run once in each new worktree, before the judge (install dependencies;",
        '# a worktree holds only what git tracks), e.g. ["npm ci"]. A failing one hands off.',
    ]
    if judge is not None and judge.setup:
        lines.append(f"# {', '.join(judge.setup)}: {judge.tool}'s dependencies are not in git.")
    lines += [
        f"setup = {setup}",
        "# Days a merged or cancelled ticket's worktree is kept (shipline workspaces --prune).",
        "retention_days = 7",
        "",
    ]
    return "\n".join(lines)


def detect(root: Path, python: str | None = None) -> tuple[list[DetectedCommand], Target]:
    """The repository's test commands (preferred first) and its merge target."""
    found = detect_test_commands(read_repo(root), str(root), python or python_on_path())
    return found, decide_target(read_git_state(root))


def init_project(root: Path, db: str | None = None) -> InitResult:
    """Write shipline.toml (unless present: it is kept unchanged) and migrate the store.
    Idempotent."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a directory")
    config = root / CONFIG_FILE
    found, target = detect(root)
    created = not config.exists()
    missing: tuple[str, ...] = ()
    suggestion = ""
    if created:
        text = CONFIG_TEMPLATE + "\n" + render_sections(found, target)
        config.write_text(text, encoding="utf-8")
    settings = load_settings(config)  # a broken existing file is a ConfigError naming it
    if not created:
        present = tomllib.loads(config.read_text(encoding="utf-8"))
        missing = tuple(s for s in SECTIONS if s not in present)
        suggestion = render_sections(found, target, missing) if missing else ""
    store = open_store(
        db or settings.store.url, root, create=True, busy_timeout_s=settings.store.busy_timeout_s
    )
    store.close()
    _ignore_state_dir(root)
    notes = (target.note,) if target.note else ()
    return InitResult(
        created=created,
        store_url=store.display_url,
        judge=settings.judge.command,
        target=settings.merge.target,
        found=tuple(found),
        notes=notes,
        missing=missing,
        suggestion=suggestion,
    )


def _ignore_state_dir(root: Path) -> None:
    """Keep the store out of git: add .shipline/ to .gitignore in a git repo."""
    try:
        if not Git(root).ok("rev-parse", "--is-inside-work-tree"):
            return
    except WorkspaceError:  # no git here: nothing to keep the store out of
        return
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if f"{STATE_DIR}/" not in lines and STATE_DIR not in lines:
        lines.append(f"{STATE_DIR}/")
        ignore.write_text("\n".join(lines) + "\n", encoding="utf-8")
