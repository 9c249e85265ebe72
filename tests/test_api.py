"""The Python API's views are the front-ends' contract: `ticket show --json` is the detail view's
JSON, and the view's JSON schema pins every key and type a web board or MCP client reads."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import shipline
from conftest import Project, demo_ticket
from shipline.api import TicketDetail

# Every key of `ticket show --json`, in order, with its JSON type. Changing one breaks the
# front-ends that read it: add keys freely, but rename or retype one only on purpose.
DETAIL_SHAPE = {
    "id": "integer",
    "kind": "string",
    "title": "string",
    "lane": "integer",
    "sensitive": "boolean",
    "status": "string",
    "phase": "string|null",
    "phases_done": "integer",
    "phases_total": "integer",
    "attempts": "integer",
    "parent_id": "integer|null",
    "tokens": "integer",
    "cost": "number|null",
    "cost_text": "string",
    "unknown_price_calls": "integer",
    "handoff_reason": "string|null",
    "code_applied": "boolean|null",
    "created_at": "date-time",
    "updated_at": "date-time",
    "body": "string",
    "route": "array<string>",
    "children": "array<ChildView>",
    "depends_on": "array<integer>",
    "merge": "MergeView|null",
    "last_objections": "array<string>",
    "phases": "array<PhaseView>",
    "calls": "array<CallView>",
    "events": "array<EventView>",
}
NESTED_SHAPES = {
    "ChildView": {"id": "integer", "title": "string", "status": "string", "key": "string|null"},
    "MergeView": {
        "target": "string",
        "commit": "string",
        "mode": "string",
        "url": "string|null",
        "at": "date-time",
    },
    "PhaseView": {
        "phase": "string",
        "deliverable": "string",
        "status": "string",
        "attempts_used": "integer",
        "attempts_allowed": "integer",
        "started_at": "date-time|null",
        "finished_at": "date-time|null",
        "seconds": "number|null",
        "tokens_in": "integer",
        "tokens_out": "integer",
        "cost": "number|null",
        "cost_text": "string",
        "models": "array<string>",
        "note": "string|null",
        "origin": "string|null",
        "attempts": "array<AttemptView>",
    },
    "AttemptView": {
        "number": "integer",
        "worker": "string",
        "truncated": "boolean",
        "chars": "integer",
        "created_at": "date-time",
        "verdict": "VerdictView|null",
        "state": "string",
        "account": "string",
        "judge_runs": "array<JudgeRunView>",
        "context": "ContextView|null",
    },
    "JudgeRunView": {
        "purpose": "string",
        "command": "string",
        "commit": "string|null",
        "exit_code": "integer",
        "timed_out": "boolean",
        "duration_s": "number",
        "log_path": "string",
    },
    "ContextView": {
        "source": "string|null",
        "reason": "string|null",
        "room": "integer",
        "tokens": "integer",
        "map": "ContextMapView",
        "files": "array<ContextFileView>",
        "cut": "array<string>",
    },
    "ContextMapView": {
        "files": "integer",
        "symbols": "integer",
        "tokens": "integer",
        "left_out": "integer",
    },
    "ContextFileView": {"path": "string", "mode": "string", "tokens": "integer"},
    "VerdictView": {"passed": "boolean", "source": "string", "objections": "array<string>"},
    "CallView": {
        "phase": "string",
        "role": "string",
        "attempt": "integer",
        "provider": "string",
        "model": "string",
        "tier": "string",
        "input_tokens": "integer",
        "output_tokens": "integer",
        "cached_tokens": "integer",
        "latency_ms": "number",
        "cost": "number|null",
        "fallback": "boolean",
        "error": "string|null",
        "estimated": "boolean",
    },
    "EventView": {"at": "date-time", "kind": "string", "message": "string"},
}


def json_type(node: dict[str, Any]) -> str:
    """A schema node as one short word: integer, date-time, string|null, array<PhaseView>."""
    if "$ref" in node:
        return str(node["$ref"]).rsplit("/", 1)[1]
    if "anyOf" in node:
        return "|".join(json_type(option) for option in node["anyOf"])
    if node.get("type") == "array":
        return f"array<{json_type(node['items'])}>"
    return str(node.get("format", node.get("type")))


def shape(schema: dict[str, Any]) -> dict[str, str]:
    return {key: json_type(sub) for key, sub in schema["properties"].items()}


def test_the_ticket_detail_schema_pins_every_key_and_type_a_front_end_reads() -> None:
    schema = TicketDetail.model_json_schema(mode="serialization")

    assert shape(schema) == DETAIL_SHAPE
    assert list(shape(schema)) == list(DETAIL_SHAPE)  # and their order
    assert schema["required"] == list(DETAIL_SHAPE)  # never left out, null when empty
    assert {name: shape(sub) for name, sub in schema["$defs"].items()} == NESTED_SHAPES
    for name, sub in schema["$defs"].items():
        assert sub["required"] == list(NESTED_SHAPES[name]), name


def test_ticket_show_json_is_the_detail_view_of_a_ticket_that_ran(
    sqlite_project: Project,
) -> None:
    hotfix = demo_ticket("hotfix")
    ticket_id = sqlite_project.add("hotfix", hotfix["title"], hotfix["body"])
    sqlite_project.cli("run")

    shown = sqlite_project.show(ticket_id)

    assert shown["status"] == "done"
    assert shown["code_applied"] is False  # no judge: the hotfix's code phases ran as text
    assert list(shown) == list(DETAIL_SHAPE)
    assert all(list(phase) == list(NESTED_SHAPES["PhaseView"]) for phase in shown["phases"])
    attempts = [a for phase in shown["phases"] for a in phase["attempts"]]
    assert attempts and all(list(a) == list(NESTED_SHAPES["AttemptView"]) for a in attempts)
    assert all(a["state"] in ("passed", "rejected") and a["account"] for a in attempts)
    assert all(list(c) == list(NESTED_SHAPES["CallView"]) for c in shown["calls"])
    # the JSON reads back into the view and writes out unchanged: one shape, both ways
    assert TicketDetail.model_validate(shown).model_dump(mode="json") == shown
    assert shown["created_at"].endswith("+00:00")  # ISO 8601 with the UTC offset


def test_the_cli_reaches_nothing_below_the_api() -> None:
    allowed = {"shipline.api", "shipline.errors", "shipline.cli", "shipline.cli.app"}
    reached: set[str] = set()
    for source in (Path(shipline.__file__).parent / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "shipline":
                reached.update(f"shipline.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                reached.add(node.module)
            elif isinstance(node, ast.Import):
                reached.update(alias.name for alias in node.names)
    ours = {name for name in reached if name.startswith("shipline.")}
    assert ours <= allowed | {"shipline.__version__", "shipline.cli.render"}, ours - allowed


# --- an attempt in words: what became of it, and what each judge said -----------------------


def _run(purpose: str, exit_code: int = 0, timed_out: bool = False) -> Any:
    from shipline.api import JudgeRunView

    return JudgeRunView(
        purpose=purpose,
        command="pytest -q",
        commit="c" * 40,
        exit_code=exit_code,
        timed_out=timed_out,
        duration_s=2.14,
        log_path="/l.log",
    )


def _verdict(passed: bool, source: str, *objections: str) -> Any:
    from shipline.api import VerdictView

    return VerdictView(passed=passed, source=source, objections=list(objections))


@pytest.mark.parametrize(
    ("phase", "human", "verdict", "runs", "state", "account"),
    [
        ("plan", False, _verdict(True, "validator"), [], "passed", "checks ok · validator passed"),
        (
            "plan",
            False,
            _verdict(False, "checks", "a", "b"),
            [],
            "rejected",
            "checks: 2 objection(s)",
        ),
        (
            "plan",
            False,
            _verdict(False, "error", "x"),
            [],
            "rejected",
            "checks ok · validator unreadable",
        ),
        (  # implement standing with red CI is never "passed"
            "implement",
            False,
            _verdict(True, "validator"),
            [_run("judge", 1)],
            "accepted with red CI → fix-ci",
            "checks ok · judge red (exit 1, 2.1 s) · validator passed",
        ),
        (
            "fix-ci",
            False,
            _verdict(False, "judge", "CI is red"),
            [_run("judge", -9, timed_out=True)],
            "rejected",
            "checks ok · judge red (killed at the timeout, 2.1 s) · judge: 1 objection(s)",
        ),
        (
            "tests",
            False,
            _verdict(True, "checks"),
            [_run("tests", 1)],
            "passed",
            "checks ok · new tests fail (exit 1, 2.1 s)",
        ),
        (  # the merge judged last
            "review",
            False,
            _verdict(True, "validator"),
            [_run("merge")],
            "passed",
            "checks ok · validator passed · merge green (exit 0, 2.1 s)",
        ),
        (
            "fix-ci",
            True,
            _verdict(True, "human"),
            [_run("judge"), _run("merge")],
            "approved by a human",
            "judge green (exit 0, 2.1 s) · merge green (exit 0, 2.1 s)",
        ),
        (
            "fix-ci",
            True,
            _verdict(False, "judge", "markers"),
            [],
            "approval refused",
            "judge: 1 objection(s)",
        ),
        ("plan", True, _verdict(True, "human"), [], "approved by a human", ""),
    ],
)
def test_an_attempt_says_what_became_of_it_and_what_each_judge_said(
    phase: str, human: bool, verdict: Any, runs: list[Any], state: str, account: str
) -> None:
    from shipline.api.tickets import attempt_account, attempt_state

    assert attempt_state(phase, human, verdict, runs, "passed", "done") == state
    assert attempt_account(human, verdict, runs) == account


@pytest.mark.parametrize(
    ("human", "step", "ticket", "state"),
    [
        (False, "claimed", "running", "awaiting verdict"),
        (False, "pending", "needs-human", "no verdict (handed off)"),
        (False, "pending", "queued", "awaiting verdict"),
        (True, "pending", "queued", "approved by a human, waiting for a worker"),
        (True, "claimed", "running", "being applied"),
        (True, "pending", "needs-human", "no verdict (handed off)"),
    ],
)
def test_an_attempt_without_a_verdict_says_why(
    human: bool, step: str, ticket: str, state: str
) -> None:
    from shipline.api.tickets import attempt_account, attempt_state

    assert attempt_state("fix-ci", human, None, [], step, ticket) == state
    assert attempt_account(human, None, []) == ""
