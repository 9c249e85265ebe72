"""Coding sessions as a code phase's producer: `[phases.X] session = "builtin" | AGENT`.

Instead of one completion whose file blocks are applied, the phase runs a session in the
ticket's worktree: the built-in agent loop (sessions/agent.py) on the phase's tier, through the
router bound as a provider (so every model turn is a recorded, budgeted, fallback-capable
call), or an external agent CLI (sessions/external.py), which starts only when the ticket's
budget allows it and, for sensitive work, only when `[agents.NAME] in_house` is true. The
session's work is committed on the ticket's branch and the attempt's deliverable is a report
naming that commit (`Commit: <sha>`), with the changed files and a bounded diff; the judge
(engine/code.py) checks that commit out and judges it.

Attempts and crashes:
- attempt 1 starts on the step's base commit (a fix-ci after a failed merge, with the target
  being merged in);
- attempt N > 1 continues attempt N-1's session, history carried, from its commit, and is told
  every objection so far (the transcript is copied, so each attempt keeps its own);
- a worker that dies mid-session leaves the transcript (written after every step) and the
  worktree: the next worker resumes that session where it stopped, and a session that had
  finished is not run again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shipline.atomic import write_json_atomic
from shipline.config import STATE_DIR, Settings
from shipline.engine.code import CodePath
from shipline.providers.base import Message, Provider
from shipline.sessions.agent import AgentSession, SessionLimits, resume
from shipline.sessions.base import SessionResult
from shipline.sessions.external import ExternalAgent
from shipline.sessions.tools import DEFAULT_DENY, WorktreeTools
from shipline.workspaces.git import Git

RecordAgentCall = Callable[[str, str, SessionResult, float], None]  # name, model, result, secs
_DIFF_CHARS = 6000


@dataclass(frozen=True)
class SessionAttempt:
    text: str  # the deliverable: the session's report, ending with `Commit: <sha>`
    messages: list[dict[str, str]]  # what the attempt keeps as its prompt
    result: SessionResult


class CodingSessions:
    def __init__(self, settings: Settings, repo: Path, code: CodePath) -> None:
        self.settings, self.repo, self.code = settings, repo, code
        self.folder = repo / STATE_DIR / "sessions"

    def transcript(self, ticket_id: int, step_id: int, number: int) -> Path:
        return self.folder / f"ticket-{ticket_id}" / f"step-{step_id}-attempt-{number}.json"

    def run(
        self,
        *,
        ticket_id: int,
        kind: str,
        title: str,
        step_id: int,
        phase: str,
        number: int,
        origin: str | None,
        task: Sequence[Message],
        objections: Sequence[str],
        provider: Provider,
        sensitive: bool,
        check_budget: Callable[[], None],
        record_agent_call: RecordAgentCall,
    ) -> SessionAttempt:
        """One attempt's session. `provider` serves the built-in loop (the router bound to the
        phase's tier); an external agent starts only after `check_budget` (which raises when the
        ticket's budget is reached) and, when `sensitive`, only if it is in-house."""
        runner = self.settings.phase(phase).session
        ws = self.code.workspace(ticket_id, title)
        git = self.code.git(ws.path)
        path = self.transcript(ticket_id, step_id, number)
        earlier = self.transcript(ticket_id, step_id, number - 1)
        data = _load(path)
        if data is None:
            previous = _load(earlier) if number > 1 else None
            if previous is not None:
                self.code.start(ws, ticket_id, step_id, origin, merge_target=False)
                if previous.get("commit"):
                    git.run("reset", "-q", "--hard", previous["commit"])
                path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(earlier, path)
                data = _load(path)
                message = _objections_message(objections)
            else:
                self.code.start(ws, ticket_id, step_id, origin)
                message = None
        else:
            message = "The session was interrupted and resumes here. Continue the task."
        if data is not None and data.get("exit_reason") and data.get("attempt", number) == number:
            result = _result_of(data)  # this attempt's session had finished: do not rerun it
        elif runner == "builtin":
            result = self._builtin(
                ws.path, path, phase, task, data, message, provider, number, kind, title
            )
        else:
            result = self._external(
                runner,
                ws.path,
                path,
                task,
                data,
                message,
                record_agent_call,
                sensitive=sensitive,
                check_budget=check_budget,
            )
        commit = git.commit_work(f"shipline #{ticket_id} {phase}: attempt {number}")
        _annotate(path, number=number, commit=commit, result=result)
        base = self.code.base_ref(ticket_id, step_id)
        text = _report(runner, result, git, base, commit, path.relative_to(self.repo))
        transcript = _load(path) or {}
        messages = [
            {"role": str(m["role"]), "content": str(m["content"])}
            for m in transcript.get("messages", [])
        ] or [{"role": m.role, "content": m.content} for m in task]
        return SessionAttempt(text, messages, result)

    # -- runners -------------------------------------------------------------------------------

    def _limits(self) -> SessionLimits:
        s = self.settings.sessions
        return SessionLimits(
            max_steps=s.max_steps,
            max_tokens=s.max_tokens or None,
            max_cost_usd=s.max_cost_usd or None,
            max_wall_s=s.max_wall_s,
        )

    def _tools(self, worktree: Path) -> WorktreeTools:
        s = self.settings.sessions
        return WorktreeTools(
            worktree,
            command_timeout_s=s.command_timeout_s,
            deny=() if s.allow_network else DEFAULT_DENY,
        )

    def _builtin(
        self,
        worktree: Path,
        path: Path,
        phase: str,
        task: Sequence[Message],
        data: dict[str, Any] | None,
        message: str | None,
        provider: Provider,
        number: int,
        kind: str,
        title: str,
    ) -> SessionResult:
        options: dict[str, Any] = {
            "limits": self._limits(),
            "phase": phase,
            "max_tokens": self.settings.sessions.max_output_tokens,
            # what each request carries of the attempt and the ticket (scripted rules match it)
            "attempt": number,
            "ticket_kind": kind,
            "ticket_title": title,
        }
        if data is not None:
            return resume(path, provider, self._tools(worktree), message=message or "", **options)
        session = AgentSession(provider, self._tools(worktree), path, **options)
        return session.run(_task_text(task))

    def _external(
        self,
        name: str,
        worktree: Path,
        path: Path,
        task: Sequence[Message],
        data: dict[str, Any] | None,
        message: str | None,
        record_agent_call: RecordAgentCall,
        *,
        sensitive: bool,
        check_budget: Callable[[], None],
    ) -> SessionResult:
        agent_settings = self.settings.agents[name]
        agent = ExternalAgent(name, agent_settings)
        prompt = _task_text(task) if data is None else (message or "")
        log_path = path.with_suffix(".log")
        check_budget()  # as before each provider call: a reached budget never starts a run
        started = time.monotonic()
        result = agent.run(
            prompt,
            worktree,
            sensitive=sensitive,
            resume_session_id=(data or {}).get("session_id"),
            timeout_s=self.settings.sessions.max_wall_s,
            log_path=log_path,
        )
        # calls record this run; the transcript (and the result) the whole session
        earlier = _result_of(data) if data is not None else None
        this_run, total = _split_usage(result, earlier, agent.kind.cumulative_usage)
        record_agent_call(name, agent_settings.model, this_run, time.monotonic() - started)
        result = total
        history = list((data or {}).get("messages", []))
        history += [
            {"role": "user", "content": prompt},
            {"role": "assistant", "content": result.final_text},
        ]
        write_json_atomic(
            path,
            {
                "version": 1,
                "session_id": result.session_id,
                "runner": name,
                "steps": result.steps,
                "usage": result.usage,
                "cost": result.cost,
                "exit_reason": result.exit_reason,
                "final_text": result.final_text,
                "messages": history,
                "tool_records": result.tool_records,
                "log": str(log_path),
            },
        )
        return result


# --- helpers ----------------------------------------------------------------------------------


def _task_text(task: Sequence[Message]) -> str:
    return "\n\n".join(m.content for m in task)


def _objections_message(objections: Sequence[str]) -> str:
    listed = "\n".join(f"- {o}" for o in objections) or "- (none recorded)"
    return (
        "Your last attempt was rejected. Every objection so far:\n"
        f"{listed}\nFix them in the worktree, then submit again."
    )


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _annotate(path: Path, *, number: int, commit: str, result: SessionResult) -> None:
    data = _load(path) or {}
    data.update(attempt=number, commit=commit, exit_reason=result.exit_reason)
    write_json_atomic(path, data)


def _result_of(data: dict[str, Any]) -> SessionResult:
    return SessionResult(
        session_id=str(data.get("session_id", "")),
        final_text=str(data.get("final_text", "")),
        usage={k: int(v) for k, v in (data.get("usage") or {}).items()},
        cost=data.get("cost"),
        exit_reason=str(data.get("exit_reason")),
        steps=int(data.get("steps", 0)),
        tool_records=list(data.get("tool_records", [])),
    )


def _split_usage(
    result: SessionResult, earlier: SessionResult | None, cumulative: bool
) -> tuple[SessionResult, SessionResult]:
    """(this run, the whole session) of an external agent's run, whichever it reported."""
    if earlier is None:
        return result, result
    keys = ("input_tokens", "output_tokens")
    before = {k: earlier.usage.get(k, 0) for k in keys}
    reported = {k: result.usage.get(k, 0) for k in keys}
    if cumulative:
        run = {k: max(0, reported[k] - before[k]) for k in keys}
        total = reported
        run_cost = (
            None if result.cost is None or earlier.cost is None else result.cost - earlier.cost
        )
        total_cost = result.cost
    else:
        run, total = reported, {k: before[k] + reported[k] for k in keys}
        run_cost = result.cost
        total_cost = (
            None if result.cost is None or earlier.cost is None else (result.cost + earlier.cost)
        )
    return (
        replace(result, usage=run, cost=run_cost),
        replace(result, usage=total, cost=total_cost, steps=earlier.steps + result.steps),
    )


def _report(
    runner: str, result: SessionResult, git: Git, base: str, commit: str, transcript: Path
) -> str:
    changed = git.changed_paths(base, commit)
    diff = git.run("diff", base, commit, check=False).stdout
    if len(diff) > _DIFF_CHARS:
        diff = diff[:_DIFF_CHARS] + f"\n… ({len(diff) - _DIFF_CHARS} more characters)\n"
    cost = "unknown" if result.cost is None else f"${result.cost:.4f}"
    files = "\n".join(f"- {path}" for path in changed) or "- (none)"
    return (
        f"## Session\nrunner: {runner}\nsession: {result.session_id}\n"
        f"exit: {result.exit_reason}\nsteps: {result.steps}, tokens in "
        f"{result.usage.get('input_tokens', 0)} / out {result.usage.get('output_tokens', 0)}, "
        f"cost {cost}\ntool calls: {len(result.tool_records)}\ntranscript: {transcript}\n\n"
        f"## Summary\n{result.final_text.strip() or '(none)'}\n\n"
        f"## Changed files\n{files}\n\n## Diff\n```diff\n{diff.rstrip()}\n```\n\n"
        f"Commit: {commit}\n"
    )


def session_objections(text: str, deliverable: str) -> list[str]:
    """The deterministic checks of a session's report: it submitted, and it changed code."""
    objections = []
    exit_line = next((ln for ln in text.splitlines() if ln.startswith("exit: ")), "exit: ?")
    reason = exit_line.removeprefix("exit: ")
    if reason != "submitted":
        objections.append(f"the session ended without submitting its work ({reason})")
    if "## Changed files\n- (none)" in text:
        objections.append(f"{deliverable}: the session changed no file")
    return objections
