"""Claude Code as a session runner: `claude -p --output-format stream-json --verbose`.

File edits are accepted without asking (`--permission-mode acceptEdits`); other tools (Bash)
run only where `[agents.NAME] args` allow them (`--allowedTools "Bash(pytest:*)"`). A new run
gets a session id of ours (`--session-id`), a resumed one `--resume ID`. The output is one JSON
event a line: `system` (init: the session id and model), `assistant` (text and `tool_use`
blocks), `user` (`tool_result` blocks), and the closing `result`, with the run's usage, its
cost in USD (`total_cost_usd`), the number of turns and the last message.
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
    "-p",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-mode",
    "acceptEdits",
)


def arguments(call: AgentCall) -> list[str]:
    model = ["--model", call.settings.model] if call.settings.model else []
    session = ["--resume" if call.resume else "--session-id", call.session_id]
    return [*_NON_INTERACTIVE, *model, *session, *call.settings.args, "--", call.task]


def parse(lines: Iterable[str], call: AgentCall | None = None) -> AgentReport:
    """Read `claude -p --output-format stream-json` output. Raises UnparsableOutput when it
    holds no Claude Code event."""
    report = AgentReport()
    calls: dict[str, tuple[str, dict[str, Any]]] = {}  # tool_use id: (name, input)
    usage_by_message: dict[str, dict[str, Any]] = {}  # for a run cut before its `result`
    seen = False
    for event in json_events(lines):
        kind = event["type"]
        message = as_dict(event.get("message"))
        if kind in ("system", "assistant", "user", "result"):
            seen = True
            report.session_id = str(event.get("session_id") or "") or report.session_id
        if kind == "system" and event.get("subtype") == "init":
            report.model = str(event.get("model") or "")
        elif kind == "assistant":
            texts = []
            for block in _blocks(message):
                if block.get("type") == "text":
                    texts.append(str(block.get("text") or ""))
                elif block.get("type") == "tool_use":
                    args = as_dict(block.get("input"))
                    calls[str(block.get("id"))] = (str(block.get("name") or "?"), args)
            if texts:
                report.final_text = "".join(texts)
            if "usage" in message:
                usage_by_message[str(message.get("id"))] = as_dict(message["usage"])
        elif kind == "user":
            for block in _blocks(message):
                if block.get("type") == "tool_result":
                    name, args = calls.pop(str(block.get("tool_use_id")), ("?", {}))
                    size = len(_text(block.get("content")))
                    report.record(name, args, size, 1 if block.get("is_error") else 0)
                    report.steps += 1
        elif kind == "result":
            _result(report, event)
    if not seen:
        raise UnparsableOutput("no Claude Code stream-json event in the output")
    if report.input_tokens is None and usage_by_message:
        _usage(report, usage_by_message.values())
    return report


def _result(report: AgentReport, event: dict[str, Any]) -> None:
    if isinstance(event.get("result"), str) and event["result"]:
        report.final_text = event["result"]
    if isinstance(event.get("usage"), dict):
        _usage(report, [event["usage"]])
    cost = event.get("total_cost_usd")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        report.cost = float(cost)
    if "num_turns" in event:  # model turns; without it, steps count the tool calls
        report.steps = as_int(event["num_turns"])
    if event.get("is_error") or str(event.get("subtype", "success")) != "success":
        why = event.get("result") or event.get("errors") or event.get("subtype") or "error"
        report.error = _text(why)


def _usage(report: AgentReport, usages: Iterable[dict[str, Any]]) -> None:
    """Anthropic counts cache reads and writes apart from `input_tokens`; shipline counts
    them in (the OpenAI convention)."""
    report.input_tokens = report.output_tokens = report.cached_tokens = 0
    for usage in usages:
        cached = as_int(usage.get("cache_read_input_tokens"))
        written = as_int(usage.get("cache_creation_input_tokens"))
        report.input_tokens += as_int(usage.get("input_tokens")) + cached + written
        report.output_tokens += as_int(usage.get("output_tokens"))
        report.cached_tokens += cached


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _text(value: Any) -> str:
    """A tool result's or an error's content as text: a string, text blocks, or JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, dict) and "text" in b for b in value):
        return "".join(str(b["text"]) for b in value)
    return json.dumps(value, ensure_ascii=False)


KIND = AgentKind(binary="claude", vendor="anthropic", arguments=arguments, parse=parse)
