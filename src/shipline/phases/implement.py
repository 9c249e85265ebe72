"""Implement: write the code (implementation.md) that makes the locked tests pass.

The deliverable is file blocks, applied to the ticket's worktree; CI is the judge. A file
block for one of the test files written by the tests phase is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .markdown import scan_file_blocks
from .tests_phase import locked_test_paths

DELIVERABLE = "implementation.md"


def code_change_objections(text: str, inputs: Mapping[str, str], deliverable: str) -> list[str]:
    """≥1 well-formed file block, and none that rewrites a test locked by tests.md."""
    blocks, objections = scan_file_blocks(text)
    if not blocks and not objections:
        objections.append(
            f"{deliverable} has no file block: write '### File: path/to/file.py' followed by "
            "a fenced code block with the whole file"
        )
    locked = locked_test_paths(inputs.get("tests.md", ""))
    for block in blocks:
        if block.path in locked:
            objections.append(f"{deliverable} modifies the locked test {block.path}")
    return objections


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """See `code_change_objections`."""
    return code_change_objections(text, inputs, DELIVERABLE)


PHASE = PhaseSpec(
    name="implement",
    deliverable=DELIVERABLE,
    inputs=("plan.md", "diagnosis.md", "tests.md"),
    purpose="Write the code that makes the locked tests pass, following the plan or diagnosis.",
    check=check,
    template="implement.md.j2",
    context="planned",
)
