"""The OpenAI Codex CLI as a session runner: `codex exec --json`, resumed by thread id.

Edits and commands run in codex's own `workspace-write` sandbox, never asking for approval.
The output is one JSON event a line: `thread.started` (the thread id), `item.completed` (an
`agent_message`, a `command_execution`, a `file_change`, an `mcp_tool_call`, a `web_search`),
`turn.completed` (the token usage) or `turn.failed` / `error`. Codex reports the thread's
running token total, so a resumed run's usage includes the runs before it; it reports no cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from shipline.sessions.base import (
    AgentCall,
    AgentKind,
    AgentReport,
    UnparsableOutput,
    as_dict,
    as_int,
    json_events,
)

_NON_INTERACTIVE = (
    "--json",
    "--skip-git-repo-check",
    "-c",
    'sandbox_mode="workspace-write"',
    "-c",
    'approval_policy="never"',
)
_EVENTS = frozenset(
    {"thread.started", "turn.started", "turn.completed", "turn.failed", "item.started",
     "item.updated", "item.completed", "error"}
)  # fmt: skip
_EXIT_REFUSED = 126  # as the built-in loop's tools record a refused call


def arguments(call: AgentCall) -> list[str]:
    model = ["-m", call.settings.model] if call.settings.model else []
    if call.resume:
        return ["exec", "resume", *_NON_INTERACTIVE, *model, *call.settings.args, "--",
                call.session_id, call.task]  # fmt: skip
    return ["exec", *_NON_INTERACTIVE, *model, *call.settings.args, "--", call.task]


def parse(lines: Iterable[str], call: AgentCall | None = None) -> AgentReport:
    """Read `codex exec --json` output. Raises UnparsableOutput when it holds no codex event."""
    report = AgentReport()
    seen = False
    for event in json_events(lines):
        kind = event["type"]
        seen = seen or kind in _EVENTS
        if kind == "thread.started":
            report.session_id = str(event.get("thread_id") or "") or report.session_id
        elif kind == "item.completed" and isinstance(event.get("item"), dict):
            _item(report, event["item"])
        elif kind == "turn.completed":
            usage = as_dict(event.get("usage"))
            report.input_tokens = as_int(usage.get("input_tokens"))
            report.output_tokens = as_int(usage.get("output_tokens"))
            report.cached_tokens = as_int(usage.get("cached_input_tokens"))
            report.error = None  # an `error` before it was retried and got over
        elif kind == "turn.failed":
            report.error = str(as_dict(event.get("error")).get("message") or "turn failed")
        elif kind == "error":
            report.error = str(event.get("message") or "error")
    if not seen:
        raise UnparsableOutput("no codex JSON event in the output")
    return report


def _item(report: AgentReport, item: dict[str, Any]) -> None:
    kind = item.get("type")
    if kind == "agent_message":
        report.final_text = str(item.get("text") or "")
        return
    if kind == "command_execution":
        status = item.get("status")
        code = item.get("exit_code")
        exit_code = code if isinstance(code, int) else _EXIT_REFUSED if status == "declined" else 1
        output = str(item.get("aggregated_output") or "")
        report.record("command", {"command": item.get("command", "")}, len(output), exit_code)
    elif kind == "file_change":
        changes = item.get("changes") if isinstance(item.get("changes"), list) else []
        ok = item.get("status") == "completed"
        report.record("file_change", {"changes": changes}, 0, 0 if ok else 1)
    elif kind == "mcp_tool_call":
        name = f"mcp:{item.get('server', '')}.{item.get('tool', '')}"
        args = as_dict(item.get("arguments"))
        result = json.dumps(item.get("result") or item.get("error") or "")
        ok = item.get("status") == "completed"
        report.record(name, args, len(result), 0 if ok else 1)
    elif kind == "web_search":
        report.record("web_search", {"query": item.get("query", "")}, 0, 0)
    else:
        return  # reasoning, todo_list, and non-fatal `error` notes are no tool calls
    report.steps += 1


KIND = AgentKind(
    binary="codex", vendor="openai", arguments=arguments, parse=parse, cumulative_usage=True
)
