"""Techspec: design the components (design.md) that realise every requirement of spec.md.

Components are ids `D1`, `D2`, … under `## Components`. Each component cites the requirements
it serves, and together they cite every requirement that spec.md defines.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .discovery import requirement_ids
from .markdown import (
    cited_ids,
    defined_ids,
    id_definitions,
    id_sort_key,
    missing_sections,
    numbering_objections,
    section,
)

DELIVERABLE = "design.md"
REQUIRED_SECTIONS = ("Components",)


def component_ids(design: str) -> list[str]:
    """The component ids defined in a design's `## Components` section, D1 first."""
    return defined_ids(design, "Components", "D")


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """D1..Dn well numbered; each cites an R; every spec R is cited; no unknown R is cited."""
    objections = missing_sections(text, DELIVERABLE, REQUIRED_SECTIONS)
    body = section(text, "Components")
    if body is None:
        return objections
    definitions = id_definitions(body, "D")
    if not definitions:
        objections.append(
            f"{DELIVERABLE} defines no components: start each one with its id, "
            "like '- **D1** (R1, R2): …', under '## Components'"
        )
        return objections
    objections += numbering_objections(definitions, "D", DELIVERABLE, "components")
    cited: set[str] = set()
    for definition in definitions:
        cites = cited_ids(definition.block, "R")
        if not cites:
            objections.append(f"{definition.id} cites no requirement (name the R ids it serves)")
        cited |= cites
    spec = inputs.get("spec.md")
    if spec is None:
        return objections
    defined = requirement_ids(spec)
    for requirement in defined:
        if requirement not in cited:
            objections.append(f"{requirement} is not cited by any component in {DELIVERABLE}")
    for requirement in sorted(cited_ids(text, "R") - set(defined), key=id_sort_key):
        objections.append(f"{DELIVERABLE} cites {requirement}, which spec.md does not define")
    return objections


PHASE = PhaseSpec(
    name="techspec",
    deliverable=DELIVERABLE,
    inputs=("spec.md",),
    purpose="Design the components that realise the spec, each tracing to requirement ids.",
    check=check,
    template="techspec.md.j2",
    context="map",
)
