"""The Python API's views are the front-ends' contract: `ticket show --json` is the detail view's
JSON, and the view's JSON schema pins every key and type a web board or MCP client reads."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

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
    "created_at": "date-time",
    "updated_at": "date-time",
    "body": "string",
    "route": "array<string>",
    "children": "array<ChildView>",
    "depends_on": "array<integer>",
    "merge": "MergeView|null",
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
        "context": "ContextView|null",
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
    assert list(shown) == list(DETAIL_SHAPE)
    assert all(list(phase) == list(NESTED_SHAPES["PhaseView"]) for phase in shown["phases"])
    attempts = [a for phase in shown["phases"] for a in phase["attempts"]]
    assert attempts and all(list(a) == list(NESTED_SHAPES["AttemptView"]) for a in attempts)
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
