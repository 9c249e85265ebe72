"""Review: check the implementation against the spec or diagnosis and give a verdict (review.md).

`## Verdict` starts with `approve` or `changes-requested`; a request for changes is an
objection that quotes the reviewer's reasons. With a spec, `## Requirements checked` names
every requirement id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import PhaseSpec
from .discovery import requirement_ids
from .markdown import cited_ids, missing_sections, section

DELIVERABLE = "review.md"
VERDICTS = ("approve", "changes-requested")


def verdict_word(verdict_section: str) -> str:
    """The verdict on the section's first non-empty line: `**Approve**.` → `approve`."""
    for line in verdict_section.splitlines():
        if line.strip():
            word = re.sub(r"[*_`]", "", line).strip().lstrip("-").strip().rstrip(".:!")
            return re.sub(r"\s+", "-", word.strip().lower())
    return ""


def _reasons(verdict_section: str) -> str:
    lines = [line.strip() for line in verdict_section.splitlines() if line.strip()]
    reasons = " ".join(line.lstrip("-*").strip() for line in lines[1:])
    return reasons or "the review gives no reasons"


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """A clear approve; with a spec, every requirement listed under `## Requirements checked`."""
    spec = inputs.get("spec.md")
    required = ("Verdict", "Requirements checked") if spec is not None else ("Verdict",)
    objections = missing_sections(text, DELIVERABLE, required)
    verdict = section(text, "Verdict")
    if verdict is not None:
        word = verdict_word(verdict)
        if word == "changes-requested":
            objections.append(f"the review requests changes: {_reasons(verdict)}")
        elif word != "approve":
            objections.append(
                f"{DELIVERABLE}: the first line of '## Verdict' must be 'approve' or "
                f"'changes-requested' (got {word or 'nothing'!r})"
            )
    checked = section(text, "Requirements checked")
    if spec is not None and checked is not None:
        mentioned = cited_ids(checked, "R")
        for requirement in requirement_ids(spec):
            if requirement not in mentioned:
                objections.append(
                    f"{requirement} is not listed under '## Requirements checked' in {DELIVERABLE}"
                )
    return objections


PHASE = PhaseSpec(
    name="review",
    deliverable=DELIVERABLE,
    inputs=("spec.md", "plan.md", "diagnosis.md", "implementation.md"),
    purpose="Review the implementation against the spec or diagnosis; approve or request changes.",
    check=check,
    template="review.md.j2",
)
