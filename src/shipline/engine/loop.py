"""The loop is the agent: produce → check → (validator) → verdict → advance, retry or hand off.

One attempt of one claimed step runs in three short transactions: the claim (which also
loads the attempt's context), the attempt (committed as soon as it is produced, with the
calls that produced it), and the verdict with the step's transition. Each write is fenced
by the lease, so a worker killed at any point leaves the store consistent, and another
worker continues from the last commit: an attempt that has no verdict yet is validated, not
produced again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from shipline.budgets import over_budget
from shipline.config import Settings
from shipline.engine import sql
from shipline.engine.code import CodeJudge, CodeOutcome
from shipline.engine.coding import CodingSessions, session_objections
from shipline.engine.prompt import Prompt, build_prompt, render_blocks
from shipline.engine.tickets import NewTicket, add_ticket, current_step, event, get_ticket
from shipline.engine.verdict import read_verdict, strip_fence
from shipline.errors import BudgetExceeded, ShiplineError, StoreError
from shipline.phases import PHASES, VERDICT_SCHEMA, get_phase
from shipline.phases.base import PhaseSpec
from shipline.providers.base import Completion, CompletionRequest, Message, Role
from shipline.providers.router import CallRecord
from shipline.providers.structured import reask
from shipline.sessions.agent import SessionResult
from shipline.store import models as m

OnEvent = Callable[[int, str, str], None]
LeaseUntil = Callable[[], datetime]


class LeaseLost(Exception):
    """Another worker took this step over (our lease expired); drop our result."""


@dataclass(frozen=True)
class Claim:
    step_id: int
    ticket_id: int
    phase: str
    token: str  # the lease owner value: worker id and claim number
    resumed: bool  # the step was claimed before by a worker that did not finish it
    last: bool = False  # the last step of the ticket's route
    parent_id: int | None = None
    attempts_used: int = 0
    attempts_allowed: int = 1
    route: tuple[str, ...] = ()


@dataclass(frozen=True)
class TicketView:
    """What a prompt may see of a ticket."""

    id: int
    kind: str
    title: str
    body: str
    lane: int
    sensitive: bool


@dataclass(frozen=True)
class AttemptContext:
    ticket: TicketView
    phase: PhaseSpec
    inputs: dict[str, str]
    history: list[dict[str, Any]]
    note: str | None
    number: int  # the attempt number to produce (or to validate, if `pending` is set)
    pending: str | None  # an attempt committed by a worker that died before its verdict
    pending_id: int | None = None
    origin: str | None = None  # an inserted step: "ci" (red after implement) or "merge"


def renew_lease(conn: Connection | Session, claim: Claim, until: datetime) -> None:
    """Fence: extend our lease, or raise LeaseLost if the step is no longer ours."""
    connection = conn.connection() if isinstance(conn, Session) else conn
    result = connection.execute(
        sql.RENEW, {"sid": claim.step_id, "token": claim.token, "until": until}
    )
    if result.rowcount != 1:
        raise LeaseLost(f"step {claim.step_id} is no longer leased to {claim.token}")


def load_context(conn: Connection, claim: Claim, row: Any) -> AttemptContext:
    """The attempt's context, read in the claim's transaction: only the declared inputs."""
    phase = get_phase(claim.phase)
    available = {
        PHASES[name].deliverable: text
        for name, text in conn.execute(
            sql.EARLIER_DELIVERABLES, {"tid": claim.ticket_id, "pos": row.position}
        )
    }
    if row.context is not None:  # what the engine handed an inserted step (fix-ci's ci.log)
        available["ci.log"] = row.context
    inputs = {name: available[name] for name in phase.inputs if name in available}
    history: list[dict[str, Any]] = []
    pending = None
    number = 0
    for attempt in conn.execute(sql.ATTEMPTS, {"sid": claim.step_id}):
        number = max(number, attempt.number)
        if attempt.passed is None:
            pending = attempt
        elif not attempt.passed:
            history.append({"attempt": attempt.number, "objections": list(attempt.objections)})
    view = TicketView(claim.ticket_id, row.kind, row.title, row.body, row.lane, row.sensitive)
    return AttemptContext(
        view,
        phase,
        inputs,
        history,
        row.note,
        pending.number if pending else number + 1,
        pending.text if pending else None,
        pending.id if pending else None,
        row.origin,
    )


class AttemptRunner:
    """Runs one attempt of a claimed step against a project's router and store."""

    def __init__(self, project: Any, on_event: OnEvent | None = None) -> None:
        self.project = project
        self.settings: Settings = project.settings
        self.store = project.store
        self.on_event = on_event or (lambda _t, _k, _m: None)
        self.code = CodeJudge(self.settings, Path(project.root), self.store)
        self.sessions = CodingSessions(self.settings, Path(project.root), self.code)
        self._lease_until: LeaseUntil = m.utcnow

    def _emit(self, ticket_id: int, kind: str, message: str) -> None:
        self.on_event(ticket_id, kind, message)

    # -- the attempt -------------------------------------------------------------------------

    def run(self, claim: Claim, ctx: AttemptContext, lease_until: LeaseUntil) -> None:
        self._lease_until = lease_until
        phase = ctx.phase
        settings = self.settings.phase(phase.name)
        calls: list[dict[str, Any]] = []
        text = ctx.pending
        attempt_id = ctx.pending_id
        try:
            if text is None:
                text, truncated, messages = (
                    self._produce_session(claim, ctx, calls)
                    if self._session(phase.name)
                    else self._produce(claim, ctx, calls)
                )
                attempt_id = self._commit_attempt(
                    claim, ctx, lease_until, text, truncated, messages, calls
                )
            else:
                self._emit(
                    claim.ticket_id,
                    "resume",
                    f"{phase.name} attempt {ctx.number}: validating the attempt a lost "
                    "worker produced",
                )
            objections = (
                session_objections(text, phase.deliverable)
                if self._session(phase.name)
                else phase.check(text, ctx.inputs)
            )
            source = "checks"
            code: CodeOutcome | None = None
            if not objections and self.code.handles(phase.name):
                code = self._judge_code(claim, ctx, text)
                objections, source = code.objections, "judge" if code.objections else source
            if not objections and settings.validator:
                objections, source = self._validate(claim, ctx, text, calls)
            red = code is not None and code.red is not None
            if not objections and claim.last and not red and self.code.merges(claim.route):
                code = self._merge(claim, ctx, text, code)
                if code.handoff and not self._fix_after_merge(claim, code):
                    self._hand_off(claim, lease_until, code.handoff, calls, code)
                    return
        except StoreError:
            raise  # the store itself failed: nothing can be recorded, the worker stops
        except ShiplineError as exc:
            # a dead provider chain, a budget, a worktree or setup failure, a judge that cannot
            # start, an agent CLI that is missing, a PR that cannot be opened: a human's turn
            self._hand_off(claim, lease_until, f"{phase.name}: {exc}", calls)
            return
        assert attempt_id is not None
        self._commit_verdict(
            claim, ctx, lease_until, attempt_id, text, source, objections, calls, code
        )

    # -- code phases under a judge (engine/code.py) -------------------------------------------

    def _deliverables(self, claim: Claim) -> dict[str, str]:
        with self.store.transaction() as conn:
            rows = conn.execute(
                sql.ACCEPTED_DELIVERABLES, {"tid": claim.ticket_id, "sid": claim.step_id}
            )
            return {PHASES[name].deliverable: text for name, text in rows}

    def _judge_code(self, claim: Claim, ctx: AttemptContext, text: str) -> CodeOutcome:
        self._emit(claim.ticket_id, "judge", f"{ctx.phase.name} attempt {ctx.number}: judging")
        with self.store.transaction() as conn:
            locks = {path: sha for path, sha in conn.execute(sql.LOCKS, {"tid": claim.ticket_id})}
        return self.code.attempt(
            ticket_id=claim.ticket_id,
            title=ctx.ticket.title,
            step_id=claim.step_id,
            phase=ctx.phase.name,
            number=ctx.number,
            text=text,
            deliverable=ctx.phase.deliverable,
            earlier=self._deliverables(claim),
            locks=locks,
            origin=ctx.origin,
            session=self._session(ctx.phase.name),
        )

    def _fix_after_merge(self, claim: Claim, code: CodeOutcome) -> bool:
        """A failed merge goes to fix-ci once (`code.red` then says what to fix), then to a
        human: True when fix-ci gets it."""
        with self.store.transaction() as conn:
            tried = int(conn.execute(sql.MERGE_FIXES, {"tid": claim.ticket_id}).scalar() or 0)
        if tried:
            assert code.handoff is not None
            code.handoff += " (fix-ci already had its one try after a failed merge)"
            return False
        return code.red is not None

    def _merge(
        self, claim: Claim, ctx: AttemptContext, text: str, before: CodeOutcome | None
    ) -> CodeOutcome:
        self._emit(claim.ticket_id, "merge", f"merging into {self.settings.merge.target}")
        outcome = self.code.merge(
            ticket_id=claim.ticket_id,
            title=ctx.ticket.title,
            step_id=claim.step_id,
            number=ctx.number,
            deliverables={**self._deliverables(claim), ctx.phase.deliverable: text},
            known_pr=self._known_pr(claim.ticket_id),
        )
        if before is not None:  # a route that ends on a code phase: keep its judge runs too
            outcome.runs[:0] = before.runs
            outcome.events[:0] = before.events
            outcome.locks = before.locks
        return outcome

    def _known_pr(self, ticket_id: int) -> str | None:
        """The PR recorded for this ticket, if any: a ticket never gets a second one."""
        with self.store.transaction() as conn:
            url = conn.execute(sql.KNOWN_PR, {"tid": ticket_id}).scalar()
        return str(url) if url else None

    @staticmethod
    def _flush_code(
        conn: Connection, claim: Claim, code: CodeOutcome | None, passed: bool, now: datetime
    ) -> None:
        if code is None:
            return
        if code.runs:
            conn.execute(sql.INSERT_JUDGE_RUNS, code.runs)
        sql.add_events(conn, claim.ticket_id, code.events, now)
        if passed and code.locks is not None:
            conn.execute(sql.DELETE_LOCKS, {"tid": claim.ticket_id})
            if code.locks:
                conn.execute(
                    sql.INSERT_LOCKS,
                    [
                        {
                            "ticket_id": claim.ticket_id,
                            "path": path,
                            "sha256": sha,
                            "commit": code.commit,
                            "created_at": now,
                        }
                        for path, sha in code.locks.items()
                    ],
                )
        if passed and code.merge is not None:
            conn.execute(sql.INSERT_MERGE, [code.merge])

    def _check_budget(self, ticket_id: int) -> None:
        """Before each provider call: a reached budget hands the ticket to a human."""
        if not self.settings.budgets.enabled:
            return
        with self.store.session() as session:
            reason = over_budget(session, self.settings, ticket_id)
        if reason is not None:
            raise BudgetExceeded(f"budget reached: {reason}")

    def _recorder(
        self, claim: Claim, role: Role, number: int, calls: list[dict[str, Any]]
    ) -> Callable[[CallRecord], None]:
        def record(call: CallRecord) -> None:
            calls.append(
                {
                    "ticket_id": claim.ticket_id,
                    "step_id": claim.step_id,
                    "phase": claim.phase,
                    "role": role,
                    "attempt": number,
                    "provider": call.provider,
                    "model": call.model,
                    "tier": call.tier,
                    "input_tokens": call.input_tokens,
                    "output_tokens": call.output_tokens,
                    "cached_tokens": call.cached_tokens,
                    "latency_ms": call.latency_ms,
                    "cost": call.cost,
                    "fallback": call.fallback,
                    "error": call.error,
                    "created_at": m.utcnow(),
                }
            )

        return record

    def _session(self, phase: str) -> bool:
        """Does this phase run a coding session (rather than one completion)?"""
        return bool(self.settings.phase(phase).session) and self.code.handles(phase)

    def _prompt(self, ctx: AttemptContext, session: bool = False) -> Prompt:
        phase = ctx.phase
        return build_prompt(
            phase,
            {
                "ticket": ctx.ticket,
                "inputs": ctx.inputs,
                "history": ctx.history,
                "note": ctx.note,
                "deliverable": phase.deliverable,
                "phase": phase,
                "session": session,
            },
            self.settings.phase(phase.name).input_token_budget,
        )

    def _produce_session(
        self, claim: Claim, ctx: AttemptContext, calls: list[dict[str, Any]]
    ) -> tuple[str, bool, list[dict[str, str]]]:
        """A coding session in the worktree (engine/coding.py); its report is the attempt."""
        phase = ctx.phase
        prompt = self._prompt(ctx, session=True)
        runner = self.settings.phase(phase.name).session
        self._emit(
            claim.ticket_id,
            "produce",
            f"{phase.name} attempt {ctx.number}: coding session ({runner}) in the worktree",
        )
        sensitive = self.settings.in_house_only(ctx.ticket.sensitive, ctx.ticket.lane)
        record = self._recorder(claim, "producer", ctx.number, calls)

        def complete(request: CompletionRequest) -> Completion:
            self._check_budget(claim.ticket_id)
            request = replace(
                request,
                attempt=ctx.number,
                ticket_kind=ctx.ticket.kind,
                ticket_title=ctx.ticket.title,
            )
            routed = self.project.router.complete(
                self.settings.tier_for(phase.name), request, sensitive=sensitive, record=record
            )
            self._flush_session_calls(claim, calls)
            return routed.completion

        def record_agent_call(name: str, model: str, result: SessionResult, secs: float) -> None:
            calls.append(
                {
                    "ticket_id": claim.ticket_id,
                    "step_id": claim.step_id,
                    "phase": claim.phase,
                    "role": "producer",
                    "attempt": ctx.number,
                    "provider": name,
                    "model": model,
                    "tier": "agent",
                    "input_tokens": result.usage.get("input_tokens", 0),
                    "output_tokens": result.usage.get("output_tokens", 0),
                    "cached_tokens": 0,
                    "latency_ms": int(secs * 1000),
                    "cost": result.cost,
                    "fallback": False,
                    "error": None if result.exit_reason == "submitted" else result.exit_reason,
                    "created_at": m.utcnow(),
                }
            )

        objections = [o for item in ctx.history for o in item["objections"]]
        done = self.sessions.run(
            ticket_id=claim.ticket_id,
            title=ctx.ticket.title,
            step_id=claim.step_id,
            phase=phase.name,
            number=ctx.number,
            origin=ctx.origin,
            task=prompt.messages,
            objections=objections,
            complete=complete,
            record_agent_call=record_agent_call,
        )
        result = done.result
        self._emit(
            claim.ticket_id,
            "session",
            f"{phase.name} attempt {ctx.number}: session {result.session_id} {result.exit_reason} "
            f"after {result.steps} steps, {len(result.tool_records)} tool calls",
        )
        return done.text, prompt.truncated, done.messages

    def _flush_session_calls(self, claim: Claim, calls: list[dict[str, Any]]) -> None:
        """A session's calls are written as they happen (a long session that dies keeps its
        bill), fenced by the lease like every write of a claimed step."""
        with self.store.transaction() as conn:
            renew_lease(conn, claim, self._lease_until())
            self._flush_calls(conn, calls)

    def _produce(
        self, claim: Claim, ctx: AttemptContext, calls: list[dict[str, Any]]
    ) -> tuple[str, bool, list[dict[str, str]]]:
        phase = ctx.phase
        settings = self.settings.phase(phase.name)
        prompt = self._prompt(ctx)
        self._emit(
            claim.ticket_id,
            "produce",
            f"{phase.name} attempt {ctx.number}: asking the producer (~{prompt.tokens} tokens in)",
        )
        request = CompletionRequest(
            messages=prompt.messages,
            phase=phase.name,
            role="producer",
            attempt=ctx.number,
            ticket_kind=ctx.ticket.kind,
            ticket_title=ctx.ticket.title,
            max_tokens=settings.max_output_tokens,
        )
        self._check_budget(claim.ticket_id)
        routed = self.project.router.complete(
            self.settings.tier_for(phase.name),
            request,
            sensitive=self.settings.in_house_only(ctx.ticket.sensitive, ctx.ticket.lane),
            record=self._recorder(claim, "producer", ctx.number, calls),
        )
        text = routed.completion.text.strip()
        if phase.output == "json":
            text = strip_fence(text)
        messages = [{"role": msg.role, "content": msg.content} for msg in prompt.messages]
        return text + "\n", prompt.truncated, messages

    def _validate(
        self, claim: Claim, ctx: AttemptContext, text: str, calls: list[dict[str, Any]]
    ) -> tuple[list[str], str]:
        """Ask the validator for a verdict. This is the one place that asks again for JSON:
        each try is one routed call (`json_repairs=None`: no provider repairs on its own), and
        a bad answer is shown back to the model with what is wrong with it."""
        phase = ctx.phase
        system, user = render_blocks(
            "validator.md.j2",
            {
                "phase": phase,
                "ticket": ctx.ticket,
                "deliverable": phase.deliverable,
                "text": text,
                "inputs": ctx.inputs,
            },
        )
        tries = self.settings.validator.parse_retries + 1
        messages = [Message("system", system), Message("user", user)]
        last = ""
        for _ in range(tries):
            self._check_budget(claim.ticket_id)
            request = CompletionRequest(
                messages=tuple(messages),
                phase=phase.name,
                role="validator",
                attempt=ctx.number,
                ticket_kind=ctx.ticket.kind,
                ticket_title=ctx.ticket.title,
                max_tokens=self.settings.validator.max_output_tokens,
                json_schema=VERDICT_SCHEMA,
                json_repairs=None,
            )
            routed = self.project.router.complete(
                self.settings.phase(phase.name).validator_tier,
                request,
                sensitive=self.settings.in_house_only(ctx.ticket.sensitive, ctx.ticket.lane),
                record=self._recorder(claim, "validator", ctx.number, calls),
            )
            last = routed.completion.text
            verdict, problem = read_verdict(last)
            if verdict is not None:
                return ([] if verdict.passed else verdict.objections), "validator"
            messages = reask(messages, last, problem)
        snippet = last.strip().replace("\n", " ")[:160]
        return [
            f"the validator's answer was not a valid JSON verdict after {tries} tries "
            f"(last: {snippet!r})"
        ], "error"

    # -- commits ---------------------------------------------------------------------------------

    def _commit_attempt(
        self,
        claim: Claim,
        ctx: AttemptContext,
        lease_until: LeaseUntil,
        text: str,
        truncated: bool,
        messages: list[dict[str, str]],
        calls: list[dict[str, Any]],
    ) -> int:
        now = m.utcnow()
        with self.store.transaction() as conn:
            renew_lease(conn, claim, lease_until())
            result = conn.execute(
                sql.INSERT_ATTEMPT,
                {
                    "step_id": claim.step_id,
                    "number": ctx.number,
                    "text": text,
                    "prompt": messages,
                    "worker": claim.token,
                    "truncated": truncated,
                    "created_at": now,
                },
            )
            self._flush_calls(conn, calls)
            note = ", prompt truncated" if truncated else ""
            produced = (
                f"{ctx.phase.name} attempt {ctx.number}: {ctx.phase.deliverable} produced "
                f"({len(text)} chars{note})"
            )
            sql.add_events(conn, claim.ticket_id, [("attempt", produced)], now)
            return int(result.inserted_primary_key[0])

    @staticmethod
    def _flush_calls(conn: Connection, calls: list[dict[str, Any]]) -> None:
        if calls:
            conn.execute(sql.INSERT_CALLS, list(calls))
            calls.clear()

    def _commit_verdict(
        self,
        claim: Claim,
        ctx: AttemptContext,
        lease_until: LeaseUntil,
        attempt_id: int,
        text: str,
        source: str,
        objections: list[str],
        calls: list[dict[str, Any]],
        code: CodeOutcome | None = None,
    ) -> None:
        name = ctx.phase.name
        passed = not objections
        used = claim.attempts_used + 1
        exhausted = not passed and used >= claim.attempts_allowed
        now = m.utcnow()
        new_status = m.PASSED if passed else (m.FAILED if exhausted else m.PENDING)
        with self.store.transaction() as conn:
            closed = conn.execute(
                sql.CLOSE_STEP,
                {
                    "sid": claim.step_id,
                    "token": claim.token,
                    "new_status": new_status,
                    "used": 1,
                    "accepted": text if passed else None,
                    "finished": now if passed or exhausted else None,
                },
            )
            if closed.rowcount != 1:
                raise LeaseLost(f"step {claim.step_id} is no longer leased to {claim.token}")
            conn.execute(
                sql.INSERT_VERDICT,
                {
                    "attempt_id": attempt_id,
                    "passed": passed,
                    "source": source,
                    "objections": objections,
                    "created_at": now,
                },
            )
            self._flush_calls(conn, calls)
            self._flush_code(conn, claim, code, passed, now)
            if passed:
                sql.add_events(
                    conn,
                    claim.ticket_id,
                    [("passed", f"{name} attempt {ctx.number}: passed ({source})")],
                    now,
                )
                followup = self._followup(code)
                if followup is not None:
                    origin, context, why = followup
                    sql.insert_step(
                        conn,
                        claim.ticket_id,
                        self._position(conn, claim),
                        "fix-ci",
                        attempts_allowed=self.settings.phase("fix-ci").max_attempts,
                        origin=origin,
                        context=context,
                    )
                    sql.add_events(conn, claim.ticket_id, [("fix-ci", why)], now)
                    conn.execute(sql.NEXT_STEP, {"tid": claim.ticket_id, "now": now})
                    status = m.QUEUED
                elif claim.last and (claim.parent_id is not None or name == "split"):
                    # rare: an epic's split creates children, a child may finish its epic
                    with self.store.orm(conn) as session:
                        ticket = get_ticket(session, claim.ticket_id)
                        status = advance(session, ticket, self.settings)
                elif claim.last:
                    conn.execute(sql.FINISH_TICKET, {"tid": claim.ticket_id, "now": now})
                    sql.add_events(conn, claim.ticket_id, [("done", "all phases accepted")], now)
                    status = m.DONE
                else:
                    conn.execute(sql.NEXT_STEP, {"tid": claim.ticket_id, "now": now})
                    status = m.QUEUED
                message = f"{name} passed on attempt {ctx.number} → {status}"
            else:
                counted = f"{name} attempt {ctx.number}: {len(objections)} objection(s) ({source})"
                # the handoff reason repeats the objections; a rejected attempt's event lists them
                detail = "" if exhausted else ": " + "; ".join(objections)
                sql.add_events(conn, claim.ticket_id, [("failed", counted + detail)], now)
                if exhausted:
                    reason = (
                        f"{name} used {used}/{claim.attempts_allowed} attempts; "
                        "remaining objections: " + "; ".join(objections)
                    )
                    with self.store.orm(conn) as session:
                        hand_off(session, get_ticket(session, claim.ticket_id), reason)
                    message = f"{name} failed attempt {ctx.number} → needs-human"
                else:
                    conn.execute(
                        sql.SET_TICKET_STATUS,
                        {"tid": claim.ticket_id, "new_status": m.QUEUED, "now": now},
                    )
                    message = f"{name} attempt {ctx.number} rejected: {objections[0]}"
        self._emit(claim.ticket_id, "verdict", message)

    @staticmethod
    def _followup(code: CodeOutcome | None) -> tuple[str, str, str] | None:
        """(origin, context, event) of the fix-ci step an accepted attempt leaves, if any."""
        if code is None or code.red is None:
            return None
        if code.handoff is not None:  # a failed merge, given to fix-ci once
            kind = "a conflict" if code.conflict else "a red judge"
            return "merge", code.red, f"the merge found {kind}: fix-ci starts"
        return "ci", code.red, "CI is red after implement: fix-ci starts"

    @staticmethod
    def _position(conn: Connection, claim: Claim) -> int:
        return int(
            conn.execute(select(sql.S.c.position).where(sql.S.c.id == claim.step_id)).scalar_one()
        )

    def _hand_off(
        self,
        claim: Claim,
        lease_until: LeaseUntil,
        reason: str,
        calls: list[dict[str, Any]],
        code: CodeOutcome | None = None,
    ) -> None:
        with self.store.transaction() as conn:
            closed = conn.execute(
                sql.CLOSE_STEP,
                {
                    "sid": claim.step_id,
                    "token": claim.token,
                    "new_status": m.PENDING,
                    "used": 0,
                    "accepted": None,
                    "finished": None,
                },
            )
            if closed.rowcount != 1:
                raise LeaseLost(f"step {claim.step_id} is no longer leased to {claim.token}")
            self._flush_calls(conn, calls)
            self._flush_code(conn, claim, code, False, m.utcnow())
            with self.store.orm(conn) as session:
                hand_off(session, get_ticket(session, claim.ticket_id), reason)
        self._emit(claim.ticket_id, "handoff", reason)


def hand_off(session: Session, ticket: m.Ticket, reason: str) -> None:
    ticket.status = m.NEEDS_HUMAN
    ticket.handoff_reason = reason
    ticket.updated_at = m.utcnow()
    event(session, ticket.id, "handoff", reason)


def advance(session: Session, ticket: m.Ticket, settings: Settings) -> str:
    """Move past an accepted step: the next phase, the epic's children, or done."""
    ticket.position += 1
    ticket.updated_at = m.utcnow()
    if current_step(ticket) is not None:
        ticket.status = m.QUEUED
        return ticket.status
    last = ticket.steps[-1]
    if last.phase == "split" and last.deliverable is not None:
        created = create_children(session, ticket, last.deliverable, settings)
        ticket.status = m.WAITING
        event(session, ticket.id, "split", f"created child tickets {created}")
        return ticket.status
    finish(session, ticket)
    return ticket.status


def finish(session: Session, ticket: m.Ticket) -> None:
    ticket.status = m.DONE
    ticket.finished_at = m.utcnow()
    event(session, ticket.id, "done", "all phases accepted")
    settle_parent(session, ticket)


def settle_parent(session: Session, child: m.Ticket) -> None:
    """An epic is done when all its children are; a cancelled child hands it to a human."""
    if child.parent_id is None:
        return
    parent = get_ticket(session, child.parent_id)
    if parent.status != m.WAITING:
        return
    children = list(
        session.scalars(
            select(m.Ticket).where(m.Ticket.parent_id == parent.id).order_by(m.Ticket.id)
        )
    )
    if all(c.status == m.DONE for c in children):
        finish(session, parent)
    elif all(c.status in m.FINAL_STATUSES for c in children):
        cancelled = [f"#{c.id}" for c in children if c.status == m.CANCELLED]
        hand_off(session, parent, f"children {', '.join(cancelled)} were cancelled")


def create_children(session: Session, epic: m.Ticket, text: str, settings: Settings) -> list[int]:
    """Create the epic's children from children.json, once: an existing key is reused."""
    data = json.loads(strip_fence(text))
    ids: dict[str, int] = {}
    for child in data["children"]:
        key = str(child["key"])
        existing = session.scalars(
            select(m.Ticket).where(m.Ticket.parent_id == epic.id, m.Ticket.child_key == key)
        ).first()
        if existing is None:
            existing = add_ticket(
                session,
                settings,
                NewTicket(
                    kind=child["kind"],
                    title=child["title"],
                    body=child.get("body", ""),
                    lane=epic.lane,
                    sensitive=epic.sensitive,
                    parent_id=epic.id,
                    child_key=key,
                ),
            )
        ids[key] = existing.id
    for child in data["children"]:
        for dep in child.get("depends_on", []):
            pair = (ids[str(child["key"])], ids[str(dep)])
            if session.get(m.Dependency, pair) is None:
                session.add(m.Dependency(ticket_id=pair[0], depends_on_id=pair[1]))
    return list(ids.values())
