"""Fix-CI: repair the implementation (fix.md) after the judge's CI run failed.

Reads the failing CI log excerpt and answers with edit and file blocks, like implement, under
the same rule: the locked tests are the source of truth and are never edited.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .implement import code_change_objections

DELIVERABLE = "fix.md"


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """≥1 well-formed file or edit block, and none that changes a test locked by tests.md."""
    return code_change_objections(text, inputs, DELIVERABLE)


PHASE = PhaseSpec(
    name="fix-ci",
    deliverable=DELIVERABLE,
    inputs=("tests.md", "implementation.md", "ci.log"),
    purpose="Fix the code so the failing CI run passes, without touching the locked tests.",
    check=check,
    template="fix_ci.md.j2",
    context="planned",
)
