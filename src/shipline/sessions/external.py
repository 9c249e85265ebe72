"""External coding agents (codex, claude, gemini, aider) as session runners.

`ExternalAgent(name, settings).run(task, workdir)` runs the agent's CLI non-interactively in the
worktree, as an argv in its own process group (through `shipline.process`, which kills the
whole group at the timeout), and returns the same `SessionResult` as the built-in loop. Each
kind is an `AgentKind` in a module of its own (`codex.py`, `claude.py`, `gemini.py`,
`aider.py`): how to build its command line, and a pure parser of its output into an
`AgentReport`. What is shared lives here: the run, the exit reason, and the cost (the agent's
own figure, else the `[agents.NAME]` prices, else the genai-prices table, else unknown: None).

The agent's output goes to `log_path` with secrets redacted; the agent's environment is this
process's plus the configured extras, and no value of it is ever logged.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipline.config import AgentSettings
from shipline.errors import ShiplineError
from shipline.process import run_command
from shipline.providers.pricing import table_price
from shipline.redact import redact
from shipline.sessions.agent import SessionResult
from shipline.sessions.tools import ToolCallRecord, _record_args

ERROR_TAIL_CHARS = 300
_GEMINI_API = "https://generativelanguage.googleapis.com"


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
        self.tool_records.append(
            ToolCallRecord(name, _record_args(args), result_size, exit_code).as_dict()
        )


@dataclass(frozen=True)
class AgentKind:
    """One agent CLI: its executable, whose price table prices it, and its two functions."""

    binary: str  # the executable when `[agents.NAME] command` is empty
    vendor: str  # openai | anthropic | google; "" when told by the model name (aider)
    arguments: Callable[[AgentCall], list[str]]  # the argv after the executable
    parse: Callable[[Iterable[str], AgentCall], AgentReport]  # may raise UnparsableOutput
    # A resumed run reports the whole session's usage (codex), not this run's alone.
    cumulative_usage: bool = False


def agent_kind(kind: str) -> AgentKind:
    # The adapters import this module for its types, so they are imported here, when needed.
    from shipline.sessions import aider, claude, codex, gemini

    kinds = {"codex": codex.KIND, "claude": claude.KIND, "gemini": gemini.KIND, "aider": aider.KIND}
    return kinds[kind]


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


# --- decisions (pure) -------------------------------------------------------------------------


def vendor_of(model: str) -> str:
    """The vendor of a model name as aider (litellm) writes it: `anthropic/claude-…`, `gpt-4o`."""
    prefix, _, rest = model.rpartition("/")
    name = (rest or model).lower()
    if prefix in ("openai", "anthropic"):
        return prefix
    if prefix in ("gemini", "google", "vertex_ai"):
        return "google"
    if prefix:
        return ""  # another router (openrouter/…, bedrock/…): not the vendor's list price
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith("gemini"):
        return "google"
    if name.startswith(("gpt-", "o1", "o3", "o4", "codex-")):
        return "openai"
    return ""


def agent_cost(settings: AgentSettings, vendor: str, report: AgentReport) -> float | None:
    """USD of a run: the agent's own figure; else tokens at the configured prices, each side
    falling back to the genai-prices table; else None (unknown is never 0)."""
    if report.cost is not None:
        return report.cost
    if report.input_tokens is None or report.output_tokens is None:
        return None
    price_in, price_out = settings.price_input_per_mtok, settings.price_output_per_mtok
    input_usd = report.input_tokens * price_in / 1e6 if price_in is not None else None
    output_usd = report.output_tokens * price_out / 1e6 if price_out is not None else None
    if input_usd is None or output_usd is None:
        model = settings.model or report.model
        vendor = vendor or vendor_of(model)
        if not vendor:
            return None
        table = table_price(
            model.rpartition("/")[2],
            kind=vendor,
            base_url=_GEMINI_API if vendor == "google" else "",
            input_tokens=report.input_tokens,
            output_tokens=report.output_tokens,
            cached_tokens=report.cached_tokens,
        )
        if table is None:
            return None
        input_usd = table.input_usd if input_usd is None else input_usd
        output_usd = table.output_usd if output_usd is None else output_usd
    return input_usd + output_usd


def output_tail(text: str, *, events: bool = False, limit: int = ERROR_TAIL_CHARS) -> str:
    """The last lines of the agent's output on one line, redacted; JSON event lines are left
    out unless `events` (what is left is its stderr, where a CLI says why it failed)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not events:
        lines = [ln for ln in lines if not ln.startswith("{")]
    return redact(_short(" | ".join(lines[-5:]) or "(no output)", limit, tail=True))


def _short(text: str, limit: int = ERROR_TAIL_CHARS, *, tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    return "…" + text[-limit:] if tail else text[:limit] + "…"


def exit_reason(
    exit_code: int, timed_out: bool, timeout_s: float, report: AgentReport | None, output: str
) -> str:
    """ "submitted", "timeout: …" or "error: …", from how the process ended and what it said."""
    if timed_out:
        return f"timeout: killed after {timeout_s:g} s"
    said = _short(redact(report.error)) if report is not None and report.error else ""
    if exit_code != 0:
        return f"error: exit {exit_code}: {said or output_tail(output)}"
    if report is None:
        return f"error: unparsable output: {output_tail(output, events=True)}"
    if said:
        return f"error: {said}"
    return "submitted"


# --- the run (I/O) ----------------------------------------------------------------------------


class ExternalAgent:
    """A configured `[agents.NAME]` entry, ready to run sessions in worktrees."""

    def __init__(self, name: str, settings: AgentSettings) -> None:
        self.name = name
        self.settings = settings
        self.kind = agent_kind(settings.kind)

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.settings.env}

    def executable(self, env: Mapping[str, str] | None = None) -> list[str]:
        """The command's words with its executable resolved on PATH, or AgentUnavailable."""
        words = shlex.split(self.settings.command) or [self.kind.binary]
        path = (env if env is not None else self.environment()).get("PATH")
        found = shutil.which(words[0], path=path)
        if found is None:
            raise AgentUnavailable(
                f"agent {self.name!r}: executable `{words[0]}` not found on PATH; install "
                f"{self.settings.kind} or set [agents.{self.name}] command in shipline.toml "
                "to its path"
            )
        return [os.path.abspath(found), *words[1:]]

    def run(
        self,
        task: str,
        workdir: Path,
        *,
        resume_session_id: str | None = None,
        timeout_s: float = 1800.0,
        log_path: Path | None = None,
    ) -> SessionResult:
        """Run the agent on `task` in `workdir` (or continue `resume_session_id`) until it exits
        or `timeout_s` passes. Raises AgentUnavailable when its executable is missing (and
        ShiplineError when `workdir` is); every other failure is the result's exit_reason."""
        if not Path(workdir).is_dir():
            raise ShiplineError(f"agent {self.name!r}: working directory {workdir} does not exist")
        env = self.environment()
        call = AgentCall(
            settings=self.settings,
            task=task,
            workdir=Path(workdir),
            session_id=resume_session_id or str(uuid.uuid4()),
            resume=resume_session_id is not None,
        )
        argv = [*self.executable(env), *self.kind.arguments(call)]
        with tempfile.TemporaryDirectory(prefix="shipline-agent-") as scratch:
            raw_log = Path(scratch) / "output.log"
            done = run_command(shlex.join(argv), call.workdir, timeout_s, env, log_path=raw_log)
            report = self._read(raw_log, call)
            if log_path is not None:
                _write_redacted(raw_log, log_path)
        reason = exit_reason(done.exit_code, done.timed_out, timeout_s, report, done.log)
        found = report or AgentReport()
        final_text = found.final_text or ("" if reason == "submitted" else reason)
        return SessionResult(
            session_id=found.session_id or call.session_id,
            final_text=final_text,
            usage={
                "input_tokens": found.input_tokens or 0,
                "output_tokens": found.output_tokens or 0,
            },
            cost=agent_cost(self.settings, self.kind.vendor, found),
            exit_reason=reason,
            steps=found.steps,
            tool_records=found.tool_records,
        )

    def _read(self, raw_log: Path, call: AgentCall) -> AgentReport | None:
        """The agent's report, or None when its output is not in the expected format."""
        with open(raw_log, encoding="utf-8", errors="replace") as lines:
            try:
                return self.kind.parse(lines, call)
            except UnparsableOutput:
                return None


def _write_redacted(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(source, encoding="utf-8", errors="replace") as lines,
        open(target, "w", encoding="utf-8") as out,
    ):
        for line in lines:
            out.write(redact(line))


__all__ = [
    "AgentCall",
    "AgentKind",
    "AgentReport",
    "AgentUnavailable",
    "ExternalAgent",
    "UnparsableOutput",
    "agent_cost",
    "agent_kind",
    "exit_reason",
    "vendor_of",
]
