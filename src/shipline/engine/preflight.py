"""Preflight: before a ticket's first code phase, make sure there is a green base to build on.

Two questions, asked before any attempt of the code phase is spent (and before any producer is
called): is `[merge] target` a branch of the repository, and does the judge pass on the commit
the ticket starts from? A missing target, or a red or hanging base, is not the ticket's to fix:
the ticket goes to needs-human with the reason, its attempts untouched, and `shipline retry`
asks again. A green result is remembered per base commit and judge command (its `judge_runs`
row, purpose `preflight`), so a ticket that starts from the same commit does not run it again;
a red one is not remembered, since its fix may lie outside git (a missing dependency).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from shipline.engine import sql
from shipline.engine.code import CODE_PHASES, CodeOutcome, CodePath
from shipline.judge.excerpt import failure_excerpt
from shipline.store.db import Store

PURPOSE = "preflight"  # judge_runs.purpose
EXCERPT_CHARS = 1500  # of the red base's log, in the handoff reason


@dataclass(frozen=True, slots=True)
class BaseRun:
    """The judge's run on the base commit: what the verdict says of it."""

    command: str
    exit_code: int
    timed_out: bool
    duration_s: float
    timeout_s: float
    log_path: str
    excerpt: str = ""

    @property
    def green(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


@dataclass(frozen=True, slots=True)
class BaseFacts:
    """What preflight knows so far; each step of `Preflight.check` adds a fact."""

    ticket_id: int
    target: str
    branches: tuple[str, ...]  # the repository's branches
    repo: str
    base: str | None = None  # the commit the ticket starts from (the target's tip)
    known: int | None = None  # a ticket whose green preflight on `base` is remembered
    run: BaseRun | None = None  # this preflight's own run of the judge


@dataclass(frozen=True, slots=True)
class PreflightVerdict:
    """`run` the judge on the base, `pass` (line: the event), or `hand-off` (line: the reason)."""

    action: Literal["run", "pass", "hand-off"]
    line: str = ""


def decide_preflight(facts: BaseFacts) -> PreflightVerdict:
    """The next move of a preflight, from what it knows so far (pure)."""
    target, tid = facts.target, facts.ticket_id
    if target not in facts.branches:
        return PreflightVerdict(
            "hand-off",
            f"preflight: [merge] target = {target!r} is not a branch of {facts.repo} (its "
            f"branches: {', '.join(facts.branches) or 'none'}): set [merge] target in "
            f"shipline.toml to the branch tickets start from, then `shipline retry {tid}`",
        )
    if facts.base is None:
        return PreflightVerdict("run")  # the worktree is not there yet: the caller makes it
    at = f"{target} at {facts.base[:10]}"
    if facts.known is not None:
        return PreflightVerdict(
            "pass", f"the judge was green on {at} for ticket #{facts.known}: not run again"
        )
    run = facts.run
    if run is None:
        return PreflightVerdict("run")
    if run.green:
        return PreflightVerdict("pass", f"the judge is green on {at}: the ticket can start")
    status = (
        f"killed after the {run.timeout_s:g} s timeout"
        if run.timed_out
        else f"exit {run.exit_code}"
    )
    reason = (
        f"preflight: the judge is red on {at} before this ticket changed anything: "
        f"`{run.command}` {status} after {run.duration_s:.1f} s (log: {run.log_path}). A red "
        f"or hanging base is not the ticket's to fix: make {target} green (or fix [judge] "
        f"command), then `shipline retry {tid}`; no attempt was spent."
    )
    return PreflightVerdict("hand-off", reason + (f"\n{run.excerpt}" if run.excerpt else ""))


class Preflight:
    """Runs the preflight of a ticket's first code phase in its worktree."""

    def __init__(self, code: CodePath, store: Store) -> None:
        self.code = code
        self.store = store

    def needed(self, ticket_id: int) -> bool:
        """No code phase of the ticket has had an attempt yet."""
        with self.store.transaction() as conn:
            count = conn.execute(
                sql.CODE_ATTEMPTS, {"tid": ticket_id, "phases": list(CODE_PHASES)}
            ).scalar()
        return not count

    def check(self, ticket_id: int, title: str, step_id: int) -> CodeOutcome:
        """The judge runs (rows), the events, and `handoff` set when the base is not fit."""
        settings, code = self.code.settings, self.code
        outcome = CodeOutcome()
        repo = code.git(code.repo)
        branches = repo.run("for-each-ref", "--format=%(refname:short)", "refs/heads/").stdout
        facts = BaseFacts(ticket_id, settings.merge.target, tuple(branches.split()), str(code.repo))
        verdict = decide_preflight(facts)
        if verdict.action == "hand-off":
            outcome.handoff = verdict.line
            return outcome
        ws = code.workspace(ticket_id, title)
        if ws.created:
            outcome.events.append(("workspace", f"worktree {ws.path} on branch {ws.branch}"))
        git = code.git(ws.path)
        tip = repo.run("rev-parse", f"refs/heads/{facts.target}").stdout.strip()
        # No code attempt has run on the branch: it moves on to the target's tip when it can
        # without losing a commit (a retry after the human fixed the target).
        if git.head() != tip and git.ok("merge-base", "--is-ancestor", "HEAD", tip):
            git.run("merge", "-q", "--ff-only", tip)
        base = git.head()
        command = settings.judge.command
        with self.store.transaction() as conn:
            known = conn.execute(sql.GREEN_PREFLIGHT, {"commit": base, "command": command}).first()
        facts = replace(facts, base=base, known=int(known.ticket_id) if known else None)
        verdict = decide_preflight(facts)
        if verdict.action == "run":
            context = {"ticket_id": ticket_id, "step_id": step_id, "attempt": None}
            result = code._run(ws, command, PURPOSE, context, outcome)
            run = BaseRun(
                command=command,
                exit_code=result.exit_code,
                timed_out=result.timed_out,
                duration_s=result.duration_s,
                timeout_s=settings.judge.timeout_s,
                log_path=outcome.runs[-1]["log_path"],
                excerpt="" if result.ok else failure_excerpt(result.log, EXCERPT_CHARS),
            )
            verdict = decide_preflight(replace(facts, run=run))
        code.remember(ticket_id)
        if verdict.action == "hand-off":
            outcome.handoff = verdict.line
        else:
            outcome.events.append(("preflight", verdict.line))
        return outcome
