"""Implement: write the code (implementation.md) that makes the locked tests pass.

The deliverable is edit blocks for existing files and file blocks for new ones, applied to the
ticket's worktree; CI is the judge. A block for one of the test files written by the tests
phase is refused.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .markdown import scan_changes
from .tests_phase import locked_test_paths

DELIVERABLE = "implementation.md"


def code_change_objections(text: str, inputs: Mapping[str, str], deliverable: str) -> list[str]:
    """≥1 well-formed file or edit block, and none that changes a test locked by tests.md."""
    changes, objections = scan_changes(text)
    if not changes.paths and not objections:
        objections.append(
            f"{deliverable} has no file block: change an existing file with '### Edit: "
            "path/to/file.py' and a fenced block of SEARCH/REPLACE blocks, or create a new one "
            "with '### File: path/to/file.py' and a fenced block holding the whole file"
        )
    locked = locked_test_paths(inputs.get("tests.md", ""))
    for path in changes.paths:
        if path in locked:
            objections.append(f"{deliverable} modifies the locked test {path}")
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
