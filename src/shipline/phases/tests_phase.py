"""Tests: write the failing tests first (tests.md), as file or edit blocks under tests/.

Once this phase passes, its test files are locked: implement and fix-ci may not edit them.
When the route has a spec, every requirement id appears in the tests (a test name such as
`test_r2_…` or a comment).
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .discovery import requirement_ids
from .markdown import cited_ids, is_test_path, scan_changes

DELIVERABLE = "tests.md"


def locked_test_paths(tests: str) -> set[str]:
    """The test file paths that tests.md writes or edits; later phases must not modify them."""
    changes, _ = scan_changes(tests)
    return set(changes.paths)


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """≥1 well-formed file or edit block, all of them test files; every spec R has a test."""
    changes, objections = scan_changes(text)
    if not changes.paths and not objections:
        objections.append(
            f"{DELIVERABLE} has no file block: write '### File: tests/test_….py' followed by "
            "a fenced code block (or '### Edit: tests/test_….py' to add to an existing one)"
        )
    for path in changes.paths:
        if not is_test_path(path):
            objections.append(
                f"{DELIVERABLE} writes {path}, which is not a test file "
                "(put tests under tests/ or name them test_*.py)"
            )
    spec = inputs.get("spec.md")
    if spec is not None:
        mentioned = cited_ids(text, "R", ignore_case=True)
        for requirement in requirement_ids(spec):
            if requirement not in mentioned:
                objections.append(
                    f"{requirement} has no test (name a test test_{requirement.lower()}_… "
                    "or mention it in a comment)"
                )
    return objections


PHASE = PhaseSpec(
    name="tests",
    deliverable=DELIVERABLE,
    inputs=("spec.md", "plan.md", "diagnosis.md"),
    purpose="Write the tests first, as test files that trace every requirement; they are "
    "locked afterwards.",
    check=check,
    template="tests.md.j2",
    context="planned",
)
