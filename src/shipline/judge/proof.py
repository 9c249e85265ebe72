"""Proof that every locked test ran and passed: per-test results from pytest's JUnit XML report.

The tests phase's run and the locked run after implement or fix-ci write a JUnit report:
`junit_env` sets `PYTEST_ADDOPTS=--junitxml=<report>`, so whatever command runs pytest
(`pytest`, `python -m pytest`, `make test`, a script) writes it, and it can name the files to
run. `read_junit` reads the report into `ReportCase`s; `case_node_id` maps a case back to its
pytest node id (`tests/test_x.py::TestC::test_y[1]`) among the locked files.

At lock time `ids_at_lock` keeps, per locked file, the ids the tests-phase run reported (less
those it skipped or xfailed); for a file that run never reached (a collection error interrupts
a pytest session, and a new test that imports a module the ticket has yet to write is the
right reason to fail) it takes the tests the file's source defines (`discover_test_ids`, by
pytest's default naming rules). After implement, `prove` says what happened to each locked id
in the locked run's report: a locked id must be there, and passed. Missing (deselected,
ignored, renamed, deleted), skipped or xfailed means it never ran; failed or error means it ran
red. A locked id without parameters (`test_y`) stands for all of its parametrized cases.

Only pytest gives this proof. Other runners (jest, vitest, go test) get the config lock
(workspaces/testconfig.py) and the exit status of the locked run.

The report is XML written by a process that runs code the model wrote, so it is read as
untrusted input with the standard library's parser, which is safe against it here: expat
(≥ 2.4.1, bundled with Python 3.11) limits entity amplification (billion laughs, quadratic
blowup), and ElementTree never fetches external entities or DTDs. On top of that a report
with a DOCTYPE (pytest never writes one) or over REPORT_LIMIT bytes is refused outright. That
is why this module does not add defusedxml as a dependency.
"""

from __future__ import annotations

import ast
import os
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPORT_LIMIT = 64 * 1024 * 1024  # bytes; a report of a few thousand tests is well under 1 MiB

PASSED, FAILED, ERROR, SKIPPED, XFAILED = "passed", "failed", "error", "skipped", "xfailed"
NOT_RUN = (SKIPPED, XFAILED)
MISSING = "not collected (deselected, ignored, renamed or deleted)"


class ReportError(ValueError):
    """The JUnit report is missing or cannot be read as one."""


@dataclass(frozen=True)
class ReportCase:
    """One `<testcase>` of a JUnit report. A file that failed to collect (or was skipped as a
    whole) has an empty classname and its dotted module path as its name."""

    classname: str
    name: str
    outcome: str  # passed | failed | error | skipped | xfailed
    message: str = ""

    @property
    def file_level(self) -> bool:
        return not self.classname


@dataclass(frozen=True)
class Unproven:
    """A locked test id the report does not show passed, and what happened to it."""

    test_id: str
    what: str  # "skipped (reason)", "missing from the report (…)", "failed (message)", …
    ran: bool  # it ran red (failed, error); else it never ran (missing, skipped, xfailed)

    def __str__(self) -> str:
        return f"{self.test_id}: {self.what}"


def junit_env(
    report: Path, files: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a command whose pytest must write a JUnit report to `report` and,
    with `files`, run those (pytest ignores a path given twice)."""
    base = dict(os.environ if environ is None else environ)
    ours = shlex.join([f"--junitxml={report}", *files])
    base["PYTEST_ADDOPTS"] = f"{base.get('PYTEST_ADDOPTS', '')} {ours}".strip()
    return base


def _outcome(case: ET.Element) -> tuple[str, str]:
    tags = {child.tag: child for child in case}
    for tag, outcome in (("failure", FAILED), ("error", ERROR)):
        if tag in tags:
            return outcome, tags[tag].get("message", "")
    if "skipped" in tags:
        skipped = tags["skipped"]
        outcome = XFAILED if skipped.get("type") == "pytest.xfail" else SKIPPED
        return outcome, skipped.get("message", "")
    return PASSED, ""


def read_junit(path: Path) -> list[ReportCase]:
    """Every `<testcase>` of a JUnit XML report (ReportError when there is none to read)."""
    try:
        size = path.stat().st_size
        if size > REPORT_LIMIT:
            raise ReportError(f"the JUnit report {path} is {size} bytes, over {REPORT_LIMIT}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"no JUnit report was written ({path})") from None
    except OSError as exc:
        raise ReportError(f"the JUnit report {path} cannot be read: {exc}") from None
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ReportError(f"the JUnit report {path} declares a DTD: not pytest's report")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ReportError(f"the JUnit report {path} is not well-formed XML: {exc}") from None
    cases = []
    for case in root.iter("testcase"):
        outcome, message = _outcome(case)
        first_line = message.strip().splitlines()[0][:200] if message.strip() else ""
        cases.append(
            ReportCase(case.get("classname", ""), case.get("name", ""), outcome, first_line)
        )
    return cases


def _dotted(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _module_of(dotted_name: str, paths: Iterable[str]) -> tuple[str, list[str]] | None:
    """The locked path whose module `dotted_name` starts with, and the names after it.

    pytest names a case's class by its node id relative to the rootdir, so a command run in a
    sub-directory names `tests.test_x` what the repository calls `sub/tests/test_x.py`: an
    exact prefix wins, then the longest dotted suffix of a path.
    """
    parts = dotted_name.split(".")
    best: tuple[int, int, str] | None = None  # (exact, prefix length, path)
    for path in paths:
        full = _dotted(path)
        for length in range(len(parts), 0, -1):
            module = ".".join(parts[:length])
            exact = module == full
            if exact or full.endswith("." + module):
                key = (int(exact), length, path)
                if best is None or key[:2] > best[:2]:
                    best = key
                break
    if best is None:
        return None
    return best[2], parts[best[1] :]


def case_node_id(case: ReportCase, paths: Iterable[str]) -> tuple[str, str] | None:
    """(locked path, pytest node id) of a case among `paths`, or None. A file-level case (a
    collection error, a module skipped whole) gets the path itself as its id."""
    if case.file_level:
        found = _module_of(case.name, paths)
        return (found[0], found[0]) if found is not None and not found[1] else None
    found = _module_of(case.classname, paths)
    if found is None:
        return None
    path, classes = found
    return path, "::".join([path, *classes, case.name])


def discover_test_ids(path: str, source: str) -> list[str]:
    """The node ids of the tests a Python file defines, by pytest's default rules: functions
    named `test*` at module level, and `test*` methods of `Test*` classes without an
    `__init__` (nested ones too). [] when the source does not parse."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)

    def in_class(node: ast.ClassDef, prefix: str) -> list[str]:
        if any(isinstance(n, functions) and n.name == "__init__" for n in node.body):
            return []
        found = []
        for child in node.body:
            if isinstance(child, functions) and child.name.startswith("test"):
                found.append(f"{prefix}::{child.name}")
            elif isinstance(child, ast.ClassDef) and child.name.startswith("Test"):
                found += in_class(child, f"{prefix}::{child.name}")
        return found

    ids = []
    for node in tree.body:
        if isinstance(node, functions) and node.name.startswith("test"):
            ids.append(f"{path}::{node.name}")
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            ids += in_class(node, f"{path}::{node.name}")
    return ids


def ids_at_lock(cases: Sequence[ReportCase], sources: Mapping[str, str]) -> dict[str, list[str]]:
    """Per locked Python test file (path → its source), the test ids to prove after implement
    (see the module doc)."""
    reported: dict[str, dict[str, str]] = {path: {} for path in sources}
    skipped_whole: set[str] = set()
    for case in cases:
        found = case_node_id(case, sources)
        if found is None:
            continue
        path, node_id = found
        if case.file_level:
            if case.outcome in NOT_RUN:
                skipped_whole.add(path)
            continue
        reported[path].setdefault(node_id, case.outcome)
    locked = {}
    for path, source in sources.items():
        if reported[path]:
            locked[path] = [i for i, outcome in reported[path].items() if outcome not in NOT_RUN]
        elif path in skipped_whole:
            locked[path] = []
        else:
            locked[path] = discover_test_ids(path, source)
    return locked


def _matches(locked_id: str, node_id: str) -> bool:
    return node_id == locked_id or ("[" not in locked_id and node_id.startswith(locked_id + "["))


def _describe(case: ReportCase) -> str:
    reason = f" ({case.message})" if case.message else ""
    return f"{case.outcome}{reason}"


def prove(locked: Mapping[str, Sequence[str]], cases: Sequence[ReportCase]) -> list[Unproven]:
    """What the report shows of each locked id (path → ids) that is not a pass; [] when every
    locked id ran and passed."""
    by_id: list[tuple[str, ReportCase]] = []
    whole: dict[str, ReportCase] = {}
    for case in cases:
        found = case_node_id(case, locked)
        if found is None:
            continue
        if case.file_level:
            whole.setdefault(found[0], case)
        else:
            by_id.append((found[1], case))
    unproven = []
    for path, ids in locked.items():
        for locked_id in ids:
            mine = [case for node_id, case in by_id if _matches(locked_id, node_id)]
            if not mine:
                if path in whole:
                    case = whole[path]
                    ran = case.outcome not in NOT_RUN
                    what = f"its file did not run: {_describe(case)}"
                    unproven.append(Unproven(locked_id, what, ran))
                else:
                    what = f"missing from the report: {MISSING}"
                    unproven.append(Unproven(locked_id, what, False))
                continue
            worst = next(
                (c for o in (FAILED, ERROR, XFAILED, SKIPPED) for c in mine if c.outcome == o),
                None,
            )
            if worst is not None:
                unproven.append(Unproven(locked_id, _describe(worst), worst.outcome not in NOT_RUN))
    return unproven
