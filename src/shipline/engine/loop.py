"""The loop is the agent: produce → check → (validator) → verdict → advance, retry or hand off.

One attempt of one claimed step runs in three short transactions: the claim (which also
loads the attempt's context), the attempt (committed as soon as it is produced, with the
calls that produced it), and the verdict with the step's transition. Each write is fenced
by the lease, so a worker killed at any point leaves the store consistent, and another
worker continues from the last commit: an attempt that has no verdict yet is validated, not
produced again. What a verdict does to the step and the ticket is decided and written by
engine/lifecycle.py.

An attempt by `human` is an approval (`shipline approve` on a code phase, or on the last step
of a route that merges): it is not checked or validated, only applied, judged and landed,
and a red judge refuses it. The first code phase of a ticket starts with its preflight
(engine/preflight.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from shipline.budgets import over_budget
from shipline.config import Settings
from shipline.engine import lifecycle, sql
from shipline.engine.code import CodeOutcome, CodePath, session_commit
from shipline.engine.coding import CodingSessions, session_objections
from shipline.engine.preflight import Preflight
from shipline.engine.prompt import Prompt, build_prompt, render_blocks
from shipline.engine.repository import phase_candidates
from shipline.engine.verdict import read_verdict, strip_fence
from shipline.errors import BudgetExceeded, ShiplineError, StoreError
from shipline.phases import PHASES, VERDICT_SCHEMA, get_phase
from shipline.phases.base import PhaseSpec
from shipline.providers.base import CompletionRequest, Message, Role
from shipline.providers.router import CallRecord
from shipline.providers.structured import reask
from shipline.sessions.base import SessionResult
from shipline.store import models as m
from shipline.store.lease import LeaseLost

if TYPE_CHECKING:
    from shipline.context.fit import Candidates

OnEvent = Callable[[int, str, str], None]
LeaseUntil = Callable[[], datetime]
HUMAN = lifecycle.HUMAN  # the worker of an attempt a human approved


@dataclass(frozen=True)
class Claim:
    """A step held under a lease (store/lease.py): what the attempt needs to know of it."""

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

    def renew(self, conn: Connection, until: datetime) -> None:
        """Fence: extend our lease on the step, or raise LeaseLost."""
        sql.STEP_LEASE.renew(conn, self.step_id, self.token, until)


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
    approved: bool = False  # the pending attempt is a human's approval, to apply and judge


def renew_lease(conn: Connection | Session, claim: Claim, until: datetime) -> None:
    """Fence: extend our lease, or raise LeaseLost if the step is no longer ours."""
    claim.renew(conn.connection() if isinstance(conn, Session) else conn, until)


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
    for attempt in conn.execute(sql.ATTEMPTS, {"sid": claim.step_id}):  # by number
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
        approved=pending is not None and pending.worker == HUMAN,
    )


class AttemptRunner:
    """Runs one attempt of a claimed step against a project's router and store."""

    def __init__(self, project: Any, on_event: OnEvent | None = None) -> None:
        self.project = project
        self.settings: Settings = project.settings
        self.store = project.store
        self.on_event = on_event or (lambda _t, _k, _m: None)
        self.code = CodePath(self.settings, Path(project.root), self.store)
        self.preflight = Preflight(self.code, self.store)
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
                if self.code.handles(phase.name) and self.preflight.needed(claim.ticket_id):
                    checked = self._preflight(claim, ctx, lease_until)
                    if checked.handoff is not None:
                        self._hand_off(claim, lease_until, checked.handoff, calls, checked)
                        return
                text, prompt, messages = (
                    self._produce_session(claim, ctx, calls)
                    if self._session(phase.name)
                    else self._produce(claim, ctx, calls)
                )
                attempt_id = self._commit_attempt(
                    claim, ctx, lease_until, text, prompt, messages, calls
                )
            else:
                self._emit(claim.ticket_id, "resume", self._resume_line(claim, ctx))
            if ctx.approved:  # a human's word: applied and judged, never checked or validated
                objections, source = [], "human"
            else:
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
                if ctx.approved and code.red is not None and not objections:
                    objections, source = [code.red], "judge"  # approved code must be green
            if not objections and settings.validator and not ctx.approved:
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

    def _resume_line(self, claim: Claim, ctx: AttemptContext) -> str:
        """What a worker says when it picks up an attempt it did not produce."""
        head = f"{ctx.phase.name} attempt {ctx.number}"
        if ctx.approved:
            then = []
            if self.code.handles(ctx.phase.name):
                then.append("applying it and running the judge")
            if claim.last and self.code.merges(claim.route):
                then.append(f"landing it on {self.settings.merge.target}")
            line = f"{head}: approved by a human; " + (", then ".join(then) or "recording it")
            lost = " (taken over after a lost worker's lease expired)" if claim.resumed else ""
            return line + lost
        if claim.resumed:
            return f"{head}: validating the attempt a lost worker produced"
        # the step was handed to a human before this attempt got its verdict, then retried
        return (
            f"{head}: judging again the attempt that was handed to a human before its verdict "
            "(no new attempt is produced)"
        )

    # -- preflight, and code phases under a judge (engine/code.py) ------------------------------

    def _preflight(self, claim: Claim, ctx: AttemptContext, lease_until: LeaseUntil) -> CodeOutcome:
        """The ticket's first code phase: is its base green? A fit base's run and events are
        committed now; an unfit one is the caller's handoff."""
        target = self.settings.merge.target
        line = f"{ctx.phase.name}: preflight: is {target} there, and is the judge green on it?"
        self._emit(claim.ticket_id, "judge", line)
        checked = self.preflight.check(claim.ticket_id, ctx.ticket.title, claim.step_id)
        if checked.handoff is None:
            now = m.utcnow()
            with self.store.transaction() as conn:
                renew_lease(conn, claim, lease_until())
                self._flush_code(conn, claim, checked, False, now)
                sql.add_events(conn, claim.ticket_id, checked.events, now)
            self._emit(claim.ticket_id, "judge", f"preflight: {checked.events[-1][1]}")
        return checked

    def _deliverables(self, claim: Claim) -> dict[str, str]:
        with self.store.transaction() as conn:
            rows = conn.execute(
                sql.ACCEPTED_DELIVERABLES, {"tid": claim.ticket_id, "sid": claim.step_id}
            )
            return {PHASES[name].deliverable: text for name, text in rows}

    def _judge_code(self, claim: Claim, ctx: AttemptContext, text: str) -> CodeOutcome:
        self._emit(claim.ticket_id, "judge", f"{ctx.phase.name} attempt {ctx.number}: judging")
        locks, config_locks, locked_ids = self._locks(claim.ticket_id)
        # an approval names a human's commit, or holds file blocks (whatever the phase's runner)
        session = (
            session_commit(text) is not None if ctx.approved else self._session(ctx.phase.name)
        )
        try:
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
                session=session,
                config_locks=config_locks,
                locked_ids=locked_ids,
                approved=ctx.approved,
            )
        finally:
            self.code.remember(claim.ticket_id)  # what a human does there next is theirs

    def _locks(self, ticket_id: int) -> tuple[dict[str, str], dict[str, str], dict[str, list[str]]]:
        """What the tests phase locked: test files, test configuration, pytest ids per file."""
        with self.store.transaction() as conn:
            tid = {"tid": ticket_id}
            locks = {path: sha for path, sha in conn.execute(sql.LOCKS, tid)}
            config = {path: sha for path, sha in conn.execute(sql.CONFIG_LOCKS, tid)}
            ids: dict[str, list[str]] = {}
            for path, test_id in conn.execute(sql.LOCKED_IDS, tid):
                ids.setdefault(path, []).append(test_id)
        return locks, config, ids

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
        locks, _, locked_ids = self._locks(claim.ticket_id)
        try:
            outcome = self.code.merge(
                ticket_id=claim.ticket_id,
                title=ctx.ticket.title,
                step_id=claim.step_id,
                number=ctx.number,
                deliverables={**self._deliverables(claim), ctx.phase.deliverable: text},
                known_pr=self._known_pr(claim.ticket_id),
                locks=locks,
                locked_ids=locked_ids,
            )
        finally:
            self.code.remember(claim.ticket_id)
        if before is not None:  # a route that ends on a code phase: keep its judge runs too
            outcome.runs[:0] = before.runs
            outcome.events[:0] = before.events
            outcome.locks = before.locks
            outcome.config_locks = before.config_locks
            outcome.locked_ids = before.locked_ids
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
        # code.events are the first lines of the verdict's transition (engine/lifecycle.py)
        if passed and code.locks is not None:
            tid = {"tid": claim.ticket_id}
            for statement in (sql.DELETE_LOCKS, sql.DELETE_CONFIG_LOCKS, sql.DELETE_LOCKED_IDS):
                conn.execute(statement, tid)
            if code.config_locks:
                conn.execute(
                    sql.INSERT_CONFIG_LOCKS,
                    [
                        {"ticket_id": claim.ticket_id, "path": p, "sha256": d, "created_at": now}
                        for p, d in code.config_locks.items()
                    ],
                )
            ids = [
                {"ticket_id": claim.ticket_id, "path": path, "test_id": i, "created_at": now}
                for path, test_ids in (code.locked_ids or {}).items()
                for i in test_ids
            ]
            if ids:
                conn.execute(sql.INSERT_LOCKED_IDS, ids)
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
        """Before each provider call and each external agent's run: a reached budget hands the
        ticket to a human."""
        if not self.settings.budgets.enabled:
            return
        with self.store.session() as session:
            reason = over_budget(session, self.settings, ticket_id)
        if reason is not None:
            raise BudgetExceeded(f"budget reached: {reason}")

    def _recorder(
        self, claim: Claim, role: Role, number: int, calls: list[dict[str, Any]]
    ) -> tuple[Callable[[CallRecord], None], Callable[[CallRecord], None]]:
        """(started, record) for the router. `started` commits the call before it is sent,
        fenced by the lease, as an estimate (its input tokens counted from the prompt): a
        worker that dies with the request in flight leaves it on the bill. `record` queues
        what the call really used, which settles that row in the step's next transaction."""
        keep_payloads = self.settings.calls.keep_payloads
        started_ids: dict[int, int] = {}  # CallRecord.key -> the started row's id

        def row(call: CallRecord) -> dict[str, Any]:
            return {
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

        def started(call: CallRecord) -> None:
            with self.store.transaction() as conn:
                renew_lease(conn, claim, self._lease_until())
                started_ids[call.key] = sql.start_call(conn, row(call))

        def record(call: CallRecord) -> None:
            settled = row(call)
            if call.key in started_ids:
                settled[sql.CALL_ID] = started_ids.pop(call.key)
            if keep_payloads:  # redacted here, outside the transaction that writes it
                settled[sql.PAYLOAD] = sql.call_payload(call.messages, call.response)
            calls.append(settled)

        return started, record

    def _session(self, phase: str) -> bool:
        """Does this phase run a coding session (rather than one completion)?"""
        return bool(self.settings.phase(phase).session) and self.code.handles(phase)

    def _prompt(self, claim: Claim, ctx: AttemptContext, session: bool = False) -> Prompt:
        phase = ctx.phase

        def repository() -> Candidates:  # read only when the prompt has room for it
            return phase_candidates(
                self.settings,
                Path(self.project.root),
                self.code.root,
                ticket_id=claim.ticket_id,
                step_id=claim.step_id,
                phase=phase,
                ticket_text=f"{ctx.ticket.title}\n{ctx.ticket.body}",
                inputs=ctx.inputs,
            )

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
                "edit_format": self.settings.phase(phase.name).edit_format,
            },
            self.settings.phase(phase.name).input_token_budget,
            repository if phase.context != "none" else None,
            self.settings.context_tokens(phase.name),
        )

    def _produce_session(
        self, claim: Claim, ctx: AttemptContext, calls: list[dict[str, Any]]
    ) -> tuple[str, Prompt, list[dict[str, str]]]:
        """A coding session in the worktree (engine/coding.py); its report is the attempt."""
        phase = ctx.phase
        prompt = self._prompt(claim, ctx, session=True)
        runner = self.settings.phase(phase.name).session
        self._emit(
            claim.ticket_id,
            "produce",
            f"{phase.name} attempt {ctx.number}: coding session ({runner}) in the worktree",
        )
        sensitive = self.settings.in_house_only(ctx.ticket.sensitive, ctx.ticket.lane)
        started, record = self._recorder(claim, "producer", ctx.number, calls)
        provider = self.project.router.bind(
            self.settings.tier_for(phase.name),
            sensitive=sensitive,
            record=record,
            started=started,
            before_call=lambda: self._check_budget(claim.ticket_id),
            after_call=lambda: self._flush_session_calls(claim, calls),
        )

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
            kind=ctx.ticket.kind,
            title=ctx.ticket.title,
            step_id=claim.step_id,
            phase=phase.name,
            number=ctx.number,
            origin=ctx.origin,
            task=prompt.messages,
            objections=objections,
            provider=provider,
            sensitive=sensitive,
            check_budget=lambda: self._check_budget(claim.ticket_id),
            record_agent_call=record_agent_call,
        )
        result = done.result
        self._emit(
            claim.ticket_id,
            "session",
            f"{phase.name} attempt {ctx.number}: session {result.session_id} {result.exit_reason} "
            f"after {result.steps} steps, {len(result.tool_records)} tool calls",
        )
        return done.text, prompt, done.messages

    def _flush_session_calls(self, claim: Claim, calls: list[dict[str, Any]]) -> None:
        """A session's calls are written as they happen (a long session that dies keeps its
        bill), fenced by the lease like every write of a claimed step."""
        with self.store.transaction() as conn:
            renew_lease(conn, claim, self._lease_until())
            self._flush_calls(conn, calls)

    def _produce(
        self, claim: Claim, ctx: AttemptContext, calls: list[dict[str, Any]]
    ) -> tuple[str, Prompt, list[dict[str, str]]]:
        phase = ctx.phase
        settings = self.settings.phase(phase.name)
        prompt = self._prompt(claim, ctx)
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
        started, record = self._recorder(claim, "producer", ctx.number, calls)
        routed = self.project.router.complete(
            self.settings.tier_for(phase.name),
            request,
            sensitive=self.settings.in_house_only(ctx.ticket.sensitive, ctx.ticket.lane),
            record=record,
            started=started,
        )
        text = routed.completion.text.strip()
        if phase.output == "json":
            text = strip_fence(text)
        messages = [{"role": msg.role, "content": msg.content} for msg in prompt.messages]
        return text + "\n", prompt, messages

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
        started, record = self._recorder(claim, "validator", ctx.number, calls)
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
                record=record,
                started=started,
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
        prompt: Prompt,
        messages: list[dict[str, str]],
        calls: list[dict[str, Any]],
    ) -> int:
        now = m.utcnow()
        truncated = prompt.truncated
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
                    "context": prompt.context,
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
            sql.insert_calls(conn, list(calls))
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
        facts = lifecycle.StepFacts(
            phase=ctx.phase.name,
            lane=ctx.ticket.lane,
            last=claim.last,
            parent=claim.parent_id is not None,
            attempts_used=claim.attempts_used,
            attempts_allowed=claim.attempts_allowed,
        )
        verdict = lifecycle.AttemptVerdict(
            ctx.number,
            tuple(objections),
            source,
            self._followup(code),
            tuple(code.events) if code is not None else (),
            approved=ctx.approved,
        )
        transition = lifecycle.decide_verdict(facts, verdict)
        now = m.utcnow()
        with self.store.transaction() as conn:
            if not lifecycle.apply(
                conn, self._target(claim), transition, now, text=text, settings=self.settings
            ):
                raise LeaseLost(f"step {claim.step_id} is no longer leased to {claim.token}")
            conn.execute(
                sql.INSERT_VERDICT,
                {
                    "attempt_id": attempt_id,
                    "passed": verdict.passed,
                    "source": source,
                    "objections": objections,
                    "created_at": now,
                },
            )
            self._flush_calls(conn, calls)
            self._flush_code(conn, claim, code, verdict.passed, now)
        self._emit(claim.ticket_id, "verdict", transition.summary)

    @staticmethod
    def _target(claim: Claim) -> lifecycle.Target:
        """The claimed step, fenced by its lease."""
        return lifecycle.Target(claim.ticket_id, claim.step_id, claim.token, claim.parent_id)

    @staticmethod
    def _followup(code: CodeOutcome | None) -> lifecycle.FollowUp | None:
        """The fix-ci step an accepted attempt leaves, if any."""
        if code is None or code.red is None:
            return None
        if code.handoff is not None:  # a failed merge, given to fix-ci once
            return lifecycle.FollowUp(m.StepOrigin.MERGE, code.red, conflict=code.conflict)
        return lifecycle.FollowUp(m.StepOrigin.CI, code.red)

    def _hand_off(
        self,
        claim: Claim,
        lease_until: LeaseUntil,
        reason: str,
        calls: list[dict[str, Any]],
        code: CodeOutcome | None = None,
    ) -> None:
        transition = lifecycle.decide_handoff(reason, code.events if code is not None else ())
        now = m.utcnow()
        with self.store.transaction() as conn:
            if not lifecycle.apply(conn, self._target(claim), transition, now):
                raise LeaseLost(f"step {claim.step_id} is no longer leased to {claim.token}")
            self._flush_calls(conn, calls)
            self._flush_code(conn, claim, code, False, now)
        self._emit(claim.ticket_id, "handoff", reason)
