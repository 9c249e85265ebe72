"""The judge of "done": the project's own CI command, run in the worktree with a timeout.

`Judge` is the interface (a remote judge such as GitHub checks plugs in there); `LocalJudge`
runs `[judge] command` through the process runner (shipline/process.py), which kills the
command's whole process group at the timeout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from shipline.process import DEFAULT_MAX_LOG_CHARS, CommandError, CommandResult, run_command


class JudgeError(CommandError):
    """The judge command cannot be started (empty command, missing directory, bad timeout)."""


# The judge's result is a command result; the name says where it came from.
JudgeResult = CommandResult


def run_judge(
    command: str,
    cwd: Path,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    *,
    max_log_chars: int = DEFAULT_MAX_LOG_CHARS,
    log_path: Path | None = None,
) -> JudgeResult:
    """Run the project's CI command in a worktree: the judge of "done", never the model."""
    if timeout_s <= 0:
        raise JudgeError(f"[judge] timeout_s must be > 0 (got {timeout_s:g})")
    return run_command(command, cwd, timeout_s, env, max_log_chars=max_log_chars, log_path=log_path)


class Judge(Protocol):
    """Who decides whether the worktree's commit is green: the same result shape for all.

    `LocalJudge` runs the project's CI command in the worktree. A remote judge (GitHub checks
    through `gh pr checks`, say) would push the commit, wait for its checks up to `timeout_s`,
    and return exit 0 for green, and the failing checks' output as the log, so the failure
    excerpt, fix-ci and the merge queue work on it unchanged.
    """

    def run(
        self, command: str, worktree: Path, timeout_s: float, log_path: Path
    ) -> JudgeResult: ...


class LocalJudge:
    """`[judge] command`, run in the worktree with a timeout (the default judge)."""

    def run(self, command: str, worktree: Path, timeout_s: float, log_path: Path) -> JudgeResult:
        return run_judge(command, worktree, timeout_s, log_path=log_path)
