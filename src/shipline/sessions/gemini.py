"""The Gemini CLI as a session runner: `gemini -p … -o stream-json`.

Edit tools are approved automatically (`--approval-mode auto_edit`) and the worktree is trusted
for the run (`--skip-trust`). A new run gets a session id of ours (`--session-id`), a resumed
one `--resume ID`. The output is read as `stream-json` rather than `json`: the single `json`
object counts tool calls by name only, while the stream has each call with its arguments. One
JSON event a line: `init` (the session id and model), `message` (the assistant's text, in
deltas), `tool_use` and `tool_result`, `error`, and the closing `result` with the run's token
stats. Gemini reports no cost.
"""

from __future__ import annotations

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

_NON_INTERACTIVE = ("-o", "stream-json", "--approval-mode", "auto_edit", "--skip-trust")
_EVENTS = frozenset({"init", "message", "tool_use", "tool_result", "error", "result"})


def arguments(call: AgentCall) -> list[str]:
    model = ["-m", call.settings.model] if call.settings.model else []
    session = ["--resume" if call.resume else "--session-id", call.session_id]
    # `--prompt=` keeps a task that starts with `-` from being read as an option
    return [f"--prompt={call.task}", *_NON_INTERACTIVE, *model, *session, *call.settings.args]


def parse(lines: Iterable[str], call: AgentCall | None = None) -> AgentReport:
    """Read `gemini -o stream-json` output. Raises UnparsableOutput when it holds no Gemini CLI
    event."""
    report = AgentReport()
    calls: dict[str, tuple[str, dict[str, Any]]] = {}  # tool_id: (name, parameters)
    message: list[str] = []  # the assistant's message being streamed
    seen = False
    for event in json_events(lines):
        kind = event["type"]
        seen = seen or kind in _EVENTS
        if kind == "init":
            report.session_id = str(event.get("session_id") or "") or report.session_id
            report.model = str(event.get("model") or "")
        elif kind == "message" and event.get("role") == "assistant":
            text = str(event.get("content") or "")
            message = [*message, text] if event.get("delta") else [text]
            report.final_text = "".join(message)
        elif kind in ("message", "tool_use", "tool_result"):
            message = []  # the next assistant text is a new message
            if kind == "tool_use":
                name = str(event.get("tool_name") or "?")
                calls[str(event.get("tool_id"))] = (name, as_dict(event.get("parameters")))
            elif kind == "tool_result":
                name, args = calls.pop(str(event.get("tool_id")), ("?", {}))
                ok = event.get("status") == "success"
                report.record(name, args, len(str(event.get("output") or "")), 0 if ok else 1)
                report.steps += 1
        elif kind == "error" and event.get("severity") == "error":
            report.error = str(event.get("message") or "error")
        elif kind == "result":
            _result(report, event)
    if not seen:
        raise UnparsableOutput("no Gemini CLI stream-json event in the output")
    return report


def _result(report: AgentReport, event: dict[str, Any]) -> None:
    stats = as_dict(event.get("stats"))
    if stats:
        report.input_tokens = as_int(stats.get("input_tokens"))  # cached ones included
        report.output_tokens = as_int(stats.get("output_tokens"))
        report.cached_tokens = as_int(stats.get("cached"))
        models = stats.get("models")
        if not report.model and isinstance(models, dict) and len(models) == 1:
            report.model = str(next(iter(models)))
    if event.get("status") == "error":
        report.error = str(as_dict(event.get("error")).get("message") or report.error or "error")


KIND = AgentKind(binary="gemini", vendor="google", arguments=arguments, parse=parse)
