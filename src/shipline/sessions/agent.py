"""The built-in agent loop: query the model, take one action, run it, append the observation.

Engine-independent and small on purpose (after mini-swe-agent's `agents/default.py`). The model
is any `Provider`; the actions run on `WorktreeTools`. Every request offers the tools (and
`submit`) as native tool definitions (`AGENT_TOOLS`); a provider that takes them answers with
`Completion.tool_calls`. One action per turn: the first call runs, and any further call of the
same turn is answered "not run" (every call gets its result, as the APIs require). A reply
without tool calls (a provider without tool support, or a model that wrote text) is read by
the text protocol, which works with every provider: exactly one fenced block, either

    ```tool
    {"name": "read_file", "args": {"path": "pkg/calc.py"}}
    ```

or ```` ```submit ```` with a summary. Control flow is by exceptions that carry their message:
`FormatError` (the message goes back to the model, and the step counts), `Submitted` and
`LimitsExceeded` (the session ends). The transcript (messages with their tool calls, tool
records, usage) is written as JSON after every step, in a `finally`; `resume` continues a
session from it, history carried. Limits count per run: a resumed run gets its own budget,
while the result's steps, usage and cost are the session's.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shipline.atomic import write_json_atomic
from shipline.errors import ProviderError, ShiplineError
from shipline.providers.base import (
    Completion,
    CompletionRequest,
    Message,
    Provider,
    Role,
    ToolCall,
)
from shipline.sessions.base import SessionResult
from shipline.sessions.tools import TOOL_SPECS, WorktreeTools

TRANSCRIPT_VERSION = 1
RESUME_NOTE = "The session was interrupted and resumes here. Continue the task."
SUBMIT_TOOL: dict[str, Any] = {
    "name": "submit",
    "description": "Finish the task: the work in the worktree is done.",
    "parameters": {
        "type": "object",
        "properties": {"summary": {"type": "string"}},
        "required": ["summary"],
    },
}
AGENT_TOOLS: tuple[dict[str, Any], ...] = (*TOOL_SPECS, SUBMIT_TOOL)
"""What every request offers as native tools."""
ONE_CALL_PER_TURN = "not run: one tool call per turn; call it again in your next turn if needed"
NOT_RUN_INTERRUPTED = "not run: the session was interrupted"


class TranscriptError(ShiplineError):
    """A saved session cannot be resumed: its transcript is missing, unreadable or foreign."""


class AgentExit(Exception):
    """An exception with meaning: `message` is what the session appends or ends with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FormatError(AgentExit):
    """The reply held no action, or more than one, or a malformed one. The model is told."""


class Submitted(AgentExit):
    """The model submitted; `message` is its summary."""


class LimitsExceeded(AgentExit):
    """A step, token, cost or wall-time limit was reached."""


@dataclass(frozen=True)
class SessionLimits:
    """None (or 0) means no limit."""

    max_steps: int | None = 50
    max_tokens: int | None = None  # input + output tokens of this run
    max_cost_usd: float | None = None
    max_wall_s: float | None = None


@dataclass(frozen=True)
class ToolAction:
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class SubmitAction:
    summary: str


Action = ToolAction | SubmitAction
ActionParser = Callable[[Completion], Action]
"""Turns a completion without native tool calls into one action, or raises FormatError."""

_BLOCK = re.compile(r"^```(tool|submit)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_PROTOCOL = (
    "When tools are offered to you natively, call one tool per turn, and call submit when "
    "the task is done. Otherwise answer with exactly one fenced block: either\n"
    '```tool\n{"name": "<tool>", "args": {...}}\n```\n'
    "to call one tool (the JSON on its own lines), or\n```submit\n<summary of the work>\n```\n"
    "when the task is done."
)


def parse_text_action(completion: Completion) -> Action:
    """The text protocol: exactly one ```tool (JSON) or ```submit block. A tool block that
    calls `submit` (the native tool, as `as_text` writes one into the history) submits too."""
    blocks = _BLOCK.findall(completion.text)
    if len(blocks) != 1:
        raise FormatError(
            f"Your reply held {len(blocks)} action blocks; it must hold exactly one. {_PROTOCOL}"
        )
    kind, body = blocks[0]
    if kind == "submit":
        return SubmitAction(body.strip())
    try:
        data = json.loads(body)
    except json.JSONDecodeError as error:
        raise FormatError(f"The tool block is not valid JSON ({error}). {_PROTOCOL}") from None
    if not (
        isinstance(data, dict)
        and isinstance(data.get("name"), str)
        and isinstance(data.get("args", {}), dict)
    ):
        raise FormatError(f'The tool block needs {{"name": str, "args": object}}. {_PROTOCOL}')
    args = data.get("args", {})
    if data["name"] == SUBMIT_TOOL["name"]:  # a native submit call, as the history shows one
        return SubmitAction(str(args.get("summary", "")).strip())
    return ToolAction(data["name"], args)


def system_prompt() -> str:
    tools = "\n".join(
        f"- {s['name']}({', '.join(s['parameters']['properties'])}): {s['description']}"
        for s in TOOL_SPECS
    )
    return (
        "You are a software engineer working in a git worktree, one tool call a step. "
        f"Paths are relative to the worktree.\nTools:\n{tools}\n{_PROTOCOL}"
    )


class AgentSession:
    """One coding session of the built-in loop. `run(task)`, or `resume(...)` from a transcript."""

    def __init__(
        self,
        provider: Provider,
        tools: WorktreeTools,
        transcript_path: Path,
        *,
        limits: SessionLimits | None = None,
        phase: str = "implement",
        role: Role = "producer",
        parser: ActionParser = parse_text_action,
        session_id: str | None = None,
        max_tokens: int = 4096,
        ticket_kind: str = "",
        ticket_title: str = "",
        attempt: int = 1,
    ) -> None:
        self.provider, self.tools, self.transcript_path = provider, tools, Path(transcript_path)
        self.limits = limits or SessionLimits()
        self.phase, self.role, self.parser = phase, role, parser
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.max_tokens, self.ticket_kind, self.ticket_title = max_tokens, ticket_kind, ticket_title
        self.attempt = attempt
        self.messages: list[Message] = []
        self.tool_records: list[dict[str, Any]] = []
        self.steps = 0
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.cost: float | None = 0.0
        self.exit_reason: str | None = None
        self.final_text = ""
        self._run = {"steps": 0, "tokens": 0, "cost": 0.0, "started": time.monotonic()}

    def run(self, task: str) -> SessionResult:
        self.messages = [Message("system", system_prompt()), Message("user", task)]
        return self._loop()

    def _loop(self) -> SessionResult:
        self.exit_reason, self.final_text = None, ""
        self._run = {"steps": 0, "tokens": 0, "cost": 0.0, "started": time.monotonic()}
        while self.exit_reason is None:
            try:
                self.step()
            except FormatError as error:
                self.messages.append(Message("user", error.message))
            except Submitted as done:
                self.exit_reason, self.final_text = "submitted", done.message
            except LimitsExceeded as limit:
                self.exit_reason, self.final_text = f"limits: {limit.message}", limit.message
            except ProviderError as error:
                self.exit_reason, self.final_text = f"error: {error}", str(error)
            finally:
                self.save()
        return self.result()

    def step(self) -> None:
        """One step: check the limits, query the model, run its action, append the result."""
        self._check_limits()
        completion = self._query()
        self.messages.append(Message("assistant", completion.text, completion.tool_calls))
        if completion.tool_calls:
            self._answer_calls(completion.tool_calls)
            return
        action = self.parser(completion)
        if isinstance(action, SubmitAction):
            raise Submitted(action.summary)
        self.messages.append(Message("user", self._run_tool(action)))

    def _answer_calls(self, calls: tuple[ToolCall, ...]) -> None:
        """Run the first native call and answer every call of the turn, in order."""
        first, submitted = calls[0], None
        if first.error:
            answer = f"error: {first.error}"
        elif first.name == SUBMIT_TOOL["name"]:
            submitted, answer = str(first.arguments.get("summary", "")), "Submitted."
        else:
            answer = self._run_tool(ToolAction(first.name, first.arguments))
        self.messages.append(Message("user", answer, tool_call_id=first.id))
        for call in calls[1:]:
            self.messages.append(Message("user", ONE_CALL_PER_TURN, tool_call_id=call.id))
        if submitted is not None:
            raise Submitted(submitted)

    def _run_tool(self, action: ToolAction) -> str:
        """Run one tool call and record it; the observation for the model."""
        outcome = self.tools.call(action.name, action.args)
        self.tool_records.append(outcome.record.as_dict())
        return f"[{action.name} exit {outcome.exit_code}]\n{outcome.text}"

    def _check_limits(self) -> None:
        lim, run = self.limits, self._run
        if lim.max_steps and run["steps"] >= lim.max_steps:
            raise LimitsExceeded(f"step limit {lim.max_steps} reached")
        if lim.max_tokens and run["tokens"] >= lim.max_tokens:
            raise LimitsExceeded(f"token limit {lim.max_tokens} reached ({run['tokens']})")
        if lim.max_cost_usd and run["cost"] >= lim.max_cost_usd:
            raise LimitsExceeded(f"cost limit ${lim.max_cost_usd:g} reached (${run['cost']:.4f})")
        elapsed = time.monotonic() - run["started"]
        if lim.max_wall_s and elapsed >= lim.max_wall_s:
            raise LimitsExceeded(f"wall-time limit {lim.max_wall_s:g} s reached")

    def _query(self) -> Completion:
        self.steps += 1
        self._run["steps"] += 1
        completion = self.provider.complete(
            CompletionRequest(
                messages=tuple(self.messages),
                phase=self.phase,
                role=self.role,
                attempt=self.attempt,
                step=self.steps,
                ticket_kind=self.ticket_kind,
                ticket_title=self.ticket_title,
                max_tokens=self.max_tokens,
                tools=AGENT_TOOLS,
            )
        )
        self.usage["input_tokens"] += completion.input_tokens
        self.usage["output_tokens"] += completion.output_tokens
        self._run["tokens"] += completion.input_tokens + completion.output_tokens
        if completion.cost is None:
            self.cost = None  # unknown stays unknown; the run's limit counts what is known
        else:
            self._run["cost"] += completion.cost
            self.cost = None if self.cost is None else self.cost + completion.cost
        return completion

    def result(self) -> SessionResult:
        return SessionResult(
            session_id=self.session_id,
            final_text=self.final_text,
            usage=dict(self.usage),
            cost=self.cost,
            exit_reason=self.exit_reason or "running",
            steps=self.steps,
            tool_records=list(self.tool_records),
        )

    def save(self) -> None:
        """Write the transcript atomically (a reader never sees half a file)."""
        data = {
            "version": TRANSCRIPT_VERSION,
            "session_id": self.session_id,
            "phase": self.phase,
            "role": self.role,
            "steps": self.steps,
            "usage": self.usage,
            "cost": self.cost,
            "exit_reason": self.exit_reason,
            "final_text": self.final_text,
            "messages": [_message_json(m) for m in self.messages],
            "tool_records": self.tool_records,
        }
        write_json_atomic(self.transcript_path, data)


def run_session(
    provider: Provider, tools: WorktreeTools, task: str, transcript_path: Path, **options: Any
) -> SessionResult:
    """Run a new session on `task`. Options: those of `AgentSession`."""
    return AgentSession(provider, tools, transcript_path, **options).run(task)


def resume(
    transcript_path: Path,
    provider: Provider,
    tools: WorktreeTools,
    *,
    message: str = RESUME_NOTE,
    **options: Any,
) -> SessionResult:
    """Continue the session saved at `transcript_path`: its messages, records, steps and usage
    are carried, `message` is appended, and the transcript goes on being written there.
    Raises TranscriptError when the file is missing, is not a transcript, or has another
    version."""
    path = Path(transcript_path)
    data = _read_transcript(path)
    try:
        options.setdefault("phase", data["phase"])
        options.setdefault("role", data["role"])
        session = AgentSession(provider, tools, path, session_id=data["session_id"], **options)
        session.messages = _answer_dangling([_message_from_json(m) for m in data["messages"]])
        session.tool_records = list(data["tool_records"])
        session.steps = int(data["steps"])
        session.usage = {k: int(v) for k, v in data["usage"].items()}
        session.cost = data["cost"]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TranscriptError(
            f"cannot resume the session saved at {path}: the transcript is damaged "
            f"({type(exc).__name__}: {exc}); delete it to start the session afresh"
        ) from None
    session.messages.append(Message("user", message))
    return session._loop()


def _read_transcript(path: Path) -> dict[str, Any]:
    """The saved session at `path`, as written by `AgentSession.save`, or TranscriptError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TranscriptError(
            f"cannot resume the session saved at {path}: {exc.strerror or exc}"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TranscriptError(
            f"cannot resume the session saved at {path}: not valid JSON ({exc}); delete it to "
            "start the session afresh"
        ) from None
    version = data.get("version") if isinstance(data, dict) else None
    if version != TRANSCRIPT_VERSION:
        raise TranscriptError(
            f"cannot resume the session saved at {path}: transcript version {version!r}, and "
            f"this shipline resumes version {TRANSCRIPT_VERSION}; delete it to start the "
            "session afresh"
        )
    return data


def _answer_dangling(messages: list[Message]) -> list[Message]:
    """Answer the last turn's tool calls left without a result (a session stopped mid-step),
    since the APIs refuse a tool call with no result after it."""
    turn = next((m for m in reversed(messages) if m.role == "assistant"), None)
    answered = {m.tool_call_id for m in messages}
    for call in turn.tool_calls if turn else ():
        if call.id not in answered:
            messages.append(Message("user", NOT_RUN_INTERRUPTED, tool_call_id=call.id))
    return messages


def _message_json(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        data["tool_calls"] = [asdict(call) for call in message.tool_calls]
    if message.tool_call_id:
        data["tool_call_id"] = message.tool_call_id
    return data


def _message_from_json(data: dict[str, Any]) -> Message:
    calls = tuple(ToolCall(**call) for call in data.get("tool_calls", ()))
    return Message(data["role"], data["content"], calls, data.get("tool_call_id", ""))


__all__ = [
    "AGENT_TOOLS",
    "SUBMIT_TOOL",
    "Action",
    "ActionParser",
    "AgentExit",
    "AgentSession",
    "FormatError",
    "LimitsExceeded",
    "SessionLimits",
    "SubmitAction",
    "Submitted",
    "ToolAction",
    "TranscriptError",
    "parse_text_action",
    "resume",
    "run_session",
    "system_prompt",
]
