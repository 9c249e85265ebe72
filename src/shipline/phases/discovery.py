"""Discovery: turn a ticket into a functional spec (spec.md) with numbered requirements.

Each requirement is an id `R1`, `R2`, … at the start of a line under `## Requirements`, and
carries its own acceptance criteria. Later phases trace these ids through design, plan and
tests.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .markdown import (
    defined_ids,
    id_definitions,
    missing_sections,
    numbering_objections,
    section,
)

DELIVERABLE = "spec.md"
REQUIRED_SECTIONS = ("Summary", "Requirements")


def requirement_ids(spec: str) -> list[str]:
    """The requirement ids defined in a spec's `## Requirements` section, R1 first."""
    return defined_ids(spec, "Requirements", "R")


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """Required sections present; R1..Rn unique, without gaps, each with acceptance criteria."""
    objections = missing_sections(text, DELIVERABLE, REQUIRED_SECTIONS)
    body = section(text, "Requirements")
    if body is None:
        return objections
    definitions = id_definitions(body, "R")
    if not definitions:
        objections.append(
            f"{DELIVERABLE} defines no requirements: start each one with its id, "
            "like '- **R1**: …', under '## Requirements'"
        )
        return objections
    objections += numbering_objections(definitions, "R", DELIVERABLE, "requirements")
    for definition in definitions:
        if "acceptance" not in definition.block.lower():
            objections.append(
                f"{definition.id} has no acceptance criteria "
                "(add a line starting with 'Acceptance:')"
            )
    return objections


PHASE = PhaseSpec(
    name="discovery",
    deliverable=DELIVERABLE,
    inputs=(),
    purpose="Turn the ticket into a functional spec: numbered requirements with acceptance "
    "criteria.",
    check=check,
    template="discovery.md.j2",
    context="map",
)
