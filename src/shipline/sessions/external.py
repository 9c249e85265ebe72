"""External coding agents (codex, claude, gemini, aider) as session runners.

`ExternalAgent(name, settings).run(task, workdir)` runs the agent's CLI non-interactively in the
worktree, as an argv in its own process group (through `shipline.process`, which kills the
whole group at the timeout), and returns the same `SessionResult` as the built-in loop. Each
kind is an `AgentKind` in a module of its own (`codex.py`, `claude.py`, `gemini.py`,
`aider.py`): how to build its command line, and a pure parser of its output into an
`AgentReport` (the types they share are in `base.py`; `AGENT_KINDS` here is their registry).
The run lives here, with the exit reason and the cost (the agent's own figure, else the
`[agents.NAME]` prices, else the genai-prices table, else unknown: None). Sensitive work (a
sensitive ticket, or an in_house_only lane) never starts an agent whose `[agents.NAME]
in_house` is false.

The agent's output goes to `log_path` with secrets redacted; the agent's environment is this
process's plus the configured extras, and no value of it is ever logged.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from shipline.config import AgentSettings
from shipline.errors import ConfigError, ShiplineError
from shipline.process import run_command
from shipline.providers.pricing import price_usd
from shipline.redact import redact
from shipline.sessions.aider import KIND as AIDER
from shipline.sessions.base import (
    AgentCall,
    AgentKind,
    AgentReport,
    AgentUnavailable,
    SessionResult,
    UnparsableOutput,
)
from shipline.sessions.claude import KIND as CLAUDE
from shipline.sessions.codex import KIND as CODEX
from shipline.sessions.gemini import KIND as GEMINI

ERROR_TAIL_CHARS = 300
_GEMINI_API = "https://generativelanguage.googleapis.com"

AGENT_KINDS: dict[str, AgentKind] = {
    "codex": CODEX,
    "claude": CLAUDE,
    "gemini": GEMINI,
    "aider": AIDER,
}
"""Every adapter by its `[agents.NAME] kind`."""


def agent_kind(kind: str) -> AgentKind:
    """The adapter of `kind`; ConfigError naming the known kinds when there is none."""
    try:
        return AGENT_KINDS[kind]
    except KeyError:
        known = ", ".join(AGENT_KINDS)
        raise ConfigError(f"unknown agent kind {kind!r} (known: {known})") from None


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
    """USD of a run: the agent's own figure; else its tokens priced by `price_usd` (the
    `[agents.NAME]` prices, each side falling back to the vendor's list price); else None
    (unknown is never 0)."""
    if report.cost is not None:
        return report.cost
    if report.input_tokens is None or report.output_tokens is None:
        return None
    model = settings.model or report.model
    vendor = vendor or vendor_of(model)
    return price_usd(
        model.rpartition("/")[2],
        kind=vendor,  # "" (a router's model name): no list price
        base_url=_GEMINI_API if vendor == "google" else "",
        input_tokens=report.input_tokens,
        output_tokens=report.output_tokens,
        cached_tokens=report.cached_tokens,
        input_per_mtok=settings.price_input_per_mtok,
        output_per_mtok=settings.price_output_per_mtok,
    )


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
        sensitive: bool = False,
        resume_session_id: str | None = None,
        timeout_s: float = 1800.0,
        log_path: Path | None = None,
    ) -> SessionResult:
        """Run the agent on `task` in `workdir` (or continue `resume_session_id`) until it exits
        or `timeout_s` passes. Sensitive work never starts an agent that is not in-house: that is
        a ConfigError before anything runs. Raises AgentUnavailable when its executable is
        missing (and ShiplineError when `workdir` is); every other failure is the result's
        exit_reason."""
        if sensitive and not self.settings.in_house:
            raise ConfigError(
                f"agent {self.name!r} is not in-house ([agents.{self.name}] in_house = false) "
                "and the work is sensitive (the ticket's flag, or its lane's in_house_only): it "
                "may not go to a hosted model; run the phase on an in-house agent or the "
                f"builtin session, or set [agents.{self.name}] in_house = true if the agent's "
                "model runs in-house"
            )
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
    "AGENT_KINDS",
    "ExternalAgent",
    "agent_cost",
    "agent_kind",
    "exit_reason",
    "vendor_of",
]
