"""Plan: order the work (plan.md) and fix the test matrix before any test or code exists.

`## Steps` is a numbered list that covers every component of design.md. `## Files` lists the
files the steps create or change, one path per line: the code phases are shown their current
content. `## Test matrix` is a table with at least a requirement column and a case column;
every requirement of spec.md gets a success, a failure and an edge row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .base import PhaseSpec
from .discovery import requirement_ids
from .markdown import (
    Table,
    _clean_path,  # the file-block path rules, shared inside the phases package
    cited_ids,
    id_sort_key,
    missing_sections,
    ordered_list_items,
    section,
    tables,
)
from .techspec import component_ids

DELIVERABLE = "plan.md"
REQUIRED_SECTIONS = ("Steps", "Files", "Test matrix")
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


_LISTED = re.compile(r"^\s{0,3}(?:[-*+]|\d+[.)])\s+(?P<item>.+)$")
_FIRST_PATH = re.compile(r"^`(?P<quoted>[^`]+)`|^(?P<bare>[^\s:,;()]+)")


def listed_files(files: str) -> list[str]:
    """The paths a plan's `## Files` section lists: the first word (or `code`) of each item."""
    found = []
    for line in files.splitlines():
        item = _LISTED.match(line)
        if item is None:
            continue
        first = _FIRST_PATH.match(item.group("item").strip().lstrip("*_"))
        if first is not None:
            token = first.group("quoted") or first.group("bare")
            found.append(token.strip().strip("*_").rstrip(".:"))
    return [path for path in found if path]


def _files_objections(files: str) -> list[str]:
    listed = listed_files(files)
    if not listed:
        return [
            f"{DELIVERABLE} lists no file under '## Files' (write one line per file: "
            "'- path/to/module.py: what changes')"
        ]
    objections = []
    for path in listed:
        _, problem = _clean_path(path)
        if problem is not None:
            objections.append(f"{DELIVERABLE} '## Files': {problem}")
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
    """Numbered steps covering every D; the files they touch; a test matrix with
    success/failure/edge per R."""
    objections = missing_sections(text, DELIVERABLE, REQUIRED_SECTIONS)
    steps = section(text, "Steps")
    if steps is not None:
        objections += _steps_objections(steps, inputs.get("design.md"))
    files = section(text, "Files")
    if files is not None:
        objections += _files_objections(files)
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
    context="map",
)
