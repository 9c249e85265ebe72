"""Diagnose: reproduce a defect, find its root cause and plan the minimal fix (diagnosis.md).

The hotfix route starts here instead of discovery: no spec, no design, just the evidence a
fix and its regression test need.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .markdown import empty_sections, missing_sections

DELIVERABLE = "diagnosis.md"
REQUIRED_SECTIONS = ("Reproduction", "Root cause", "Fix plan", "Regression test")


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """Each of the four required sections is present and says something."""
    return missing_sections(text, DELIVERABLE, REQUIRED_SECTIONS) + empty_sections(
        text, DELIVERABLE, REQUIRED_SECTIONS
    )


PHASE = PhaseSpec(
    name="diagnose",
    deliverable=DELIVERABLE,
    inputs=(),
    purpose="Reproduce the defect, find its root cause, and plan the minimal fix and its "
    "regression test.",
    check=check,
    template="diagnose.md.j2",
    context="named",
)
