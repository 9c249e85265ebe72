"""What every session runner shares: the result it returns, the tool-call records it keeps, and
the adapter protocol of an external agent CLI (`AgentKind`: its command line and its parser).

The built-in loop (agent.py), its tools (tools.py), the external runner (external.py) and each
adapter (codex.py, claude.py, gemini.py, aider.py) import this module; it imports none of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipline.config import AgentSettings
from shipline.errors import ShiplineError
from shipline.redact import redact_obj

RECORD_ARG_CHARS = 2000


@dataclass(frozen=True)
class SessionResult:
    """The normalised shape every session runner returns (built-in loop and external agents)."""

    session_id: str
    final_text: str
    usage: dict[str, int]  # {input_tokens, output_tokens}
    cost: float | None  # None when a provider did not know its price
    exit_reason: str  # "submitted", "limits: …", "error: …"
    steps: int
    tool_records: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ToolCallRecord:
    """What the transcript and the audit log keep of one tool call."""

    name: str
    args: dict[str, Any]  # secrets redacted; long strings cut, with the cut said
    result_size: int  # characters of text returned to the model
    exit_code: int

    @classmethod
    def of(
        cls, name: str, args: Mapping[str, Any], result_size: int, exit_code: int
    ) -> ToolCallRecord:
        """The record of a call with these arguments, redacted and cut."""
        return cls(name, record_args(args), result_size, exit_code)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "args": self.args,
            "result_size": self.result_size,
            "exit_code": self.exit_code,
        }


def record_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """A tool call's arguments as a record keeps them: secrets redacted, long strings cut."""
    redacted: dict[str, Any] = redact_obj(dict(args))
    for key, value in redacted.items():
        if isinstance(value, str) and len(value) > RECORD_ARG_CHARS:
            redacted[key] = value[:RECORD_ARG_CHARS] + f"…[+{len(value) - RECORD_ARG_CHARS} chars]"
    return redacted


# --- the external agent adapter protocol -------------------------------------------------------


class AgentUnavailable(ShiplineError):
    """The agent's executable is not installed (or not where `[agents.NAME] command` says)."""


class UnparsableOutput(ValueError):
    """The agent's output is not in the format its adapter reads (raised by the parsers)."""


@dataclass(frozen=True)
class AgentCall:
    """One run of an external agent, as its adapter sees it."""

    settings: AgentSettings
    task: str
    workdir: Path
    session_id: str  # the session to resume, or a fresh UUID of ours
    resume: bool


@dataclass
class AgentReport:
    """What an agent's output says about its run. Token counts follow the OpenAI convention
    (`input_tokens` includes `cached_tokens`); None: the output did not say."""

    session_id: str | None = None
    model: str = ""  # the model the agent says it used
    final_text: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int = 0
    cost: float | None = None  # the agent's own figure, USD
    steps: int = 0
    tool_records: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # the agent said the run failed, and why

    def record(self, name: str, args: Mapping[str, Any], result_size: int, exit_code: int) -> None:
        """Keep one tool call, its arguments redacted (as the built-in loop keeps them)."""
        self.tool_records.append(ToolCallRecord.of(name, args, result_size, exit_code).as_dict())


@dataclass(frozen=True)
class AgentKind:
    """One agent CLI: its executable, whose price table prices it, and its two functions."""

    binary: str  # the executable when `[agents.NAME] command` is empty
    vendor: str  # openai | anthropic | google; "" when told by the model name (aider)
    arguments: Callable[[AgentCall], list[str]]  # the argv after the executable
    parse: Callable[[Iterable[str], AgentCall], AgentReport]  # may raise UnparsableOutput
    # A resumed run reports the whole session's usage (codex), not this run's alone.
    cumulative_usage: bool = False


# --- helpers of the adapters' parsers (pure) ---------------------------------------------------


def json_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects with a string `type` among `lines` (stderr is merged in: skip the rest)."""
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            yield event


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


__all__ = [
    "RECORD_ARG_CHARS",
    "AgentCall",
    "AgentKind",
    "AgentReport",
    "AgentUnavailable",
    "SessionResult",
    "ToolCallRecord",
    "UnparsableOutput",
    "as_dict",
    "as_int",
    "json_events",
    "record_args",
]
