"""The judge: the project's own CI command, run in a worktree, decides "done"; plus log excerpts,
the classifier of new tests' failures, and the proof that the locked tests ran and passed
(`proof`: pytest's JUnit report)."""

from shipline.judge.excerpt import failure_excerpt
from shipline.judge.runner import Judge, JudgeError, JudgeResult, LocalJudge, run_judge

__all__ = [
    "Judge",
    "JudgeError",
    "JudgeResult",
    "LocalJudge",
    "failure_excerpt",
    "run_judge",
]
