"""The judge: the project's own CI command, run in a worktree, decides "done"; plus log excerpts."""

from shipline.judge.excerpt import failure_excerpt
from shipline.judge.runner import (
    CommandResult,
    Judge,
    JudgeError,
    JudgeResult,
    LocalJudge,
    run_command,
    run_judge,
)

__all__ = [
    "CommandResult",
    "Judge",
    "JudgeError",
    "JudgeResult",
    "LocalJudge",
    "failure_excerpt",
    "run_command",
    "run_judge",
]
