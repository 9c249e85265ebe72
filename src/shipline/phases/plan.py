"""Plan: order the work (plan.md) and fix the test matrix before any test or code exists.

`## Steps` is a numbered list that covers every component of design.md. `## Test matrix`
is a table with at least a requirement column and a case column; every requirement of
spec.md gets a success, a failure and an edge row.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import PhaseSpec
from .discovery import requirement_ids
from .markdown import (
    Table,
    cited_ids,
    id_sort_key,
    missing_sections,
    ordered_list_items,
    section,
    tables,
)
from .techspec import component_ids

DELIVERABLE = "plan.md"
REQUIRED_SECTIONS = ("Steps", "Test matrix")
CASES = ("success", "failure", "edge")


def _matrix_columns(table: Table) -> tuple[str, str] | None:
    """(requirement column, case column) of a table, or None when it lacks either."""
    requirement = next((h for h in table.headers if h.startswith("req")), None)
    case = next((h for h in table.headers if "case" in h), None)
    if requirement is None or case is None:
        return None
    return requirement, case


def _steps_objections(steps: str, design: str | None) -> list[str]:
    objections: list[str] = []
    if not ordered_list_items(steps):
        objections.append(f"{DELIVERABLE} has no numbered steps under '## Steps' (write '1. …')")
    if design is None:
        return objections
    components = component_ids(design)
    covered = cited_ids(steps, "D")
    for component in components:
        if component not in covered:
            objections.append(f"{component} is not covered by any step in {DELIVERABLE}")
    for unknown in sorted(covered - set(components), key=id_sort_key):
        objections.append(f"{DELIVERABLE} refers to {unknown}, which design.md does not define")
    return objections


def _matrix_objections(matrix: str, spec: str | None) -> list[str]:
    found = [(t, cols) for t in tables(matrix) if (cols := _matrix_columns(t)) is not None]
    if not found:
        return [
            f"{DELIVERABLE} has no table under '## Test matrix' with a 'requirement' "
            "and a 'case' column"
        ]
    table, (requirement_column, case_column) = found[0]
    objections: list[str] = []
    covered: dict[str, set[str]] = {}
    for number, row in enumerate(table.rows, start=1):
        requirements = cited_ids(row.get(requirement_column, ""), "R")
        case = row.get(case_column, "").strip().lower()
        if not requirements:
            objections.append(f"test matrix row {number} names no requirement (write R1, R2, …)")
        if case not in CASES:
            objections.append(
                f"test matrix row {number} has case {case!r}; use success, failure or edge"
            )
            continue
        for requirement in requirements:
            covered.setdefault(requirement, set()).add(case)
    if spec is None:
        return objections
    defined = requirement_ids(spec)
    for requirement in defined:
        for case in CASES:
            if case not in covered.get(requirement, set()):
                objections.append(f"{requirement} has no '{case}' row in the test matrix")
    for unknown in sorted(set(covered) - set(defined), key=id_sort_key):
        objections.append(f"the test matrix names {unknown}, which spec.md does not define")
    return objections


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """Numbered steps covering every D; a test matrix with success/failure/edge per R."""
    objections = missing_sections(text, DELIVERABLE, REQUIRED_SECTIONS)
    steps = section(text, "Steps")
    if steps is not None:
        objections += _steps_objections(steps, inputs.get("design.md"))
    matrix = section(text, "Test matrix")
    if matrix is not None:
        objections += _matrix_objections(matrix, inputs.get("spec.md"))
    return objections


PHASE = PhaseSpec(
    name="plan",
    deliverable=DELIVERABLE,
    inputs=("spec.md", "design.md"),
    purpose="Order the work in steps covering every component, and fix the test matrix.",
    check=check,
    template="plan.md.j2",
)
