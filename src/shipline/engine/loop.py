"""The loop is the agent: produce → check → (validator) → verdict → advance, retry or hand off.

`run_attempt` runs one attempt of one claimed step. It commits the attempt as soon as it is
produced and the verdict (with the step's transition) in one fenced transaction, so a worker
killed at any point leaves the store consistent and another worker continues from there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shipline.config import Settings
from shipline.engine.prompt import build_prompt, render_blocks
from shipline.engine.tickets import NewTicket, add_ticket, current_step, event, get_ticket
from shipline.engine.verdict import parse_verdict, strip_fence
from shipline.errors import BudgetExceeded, ConfigError, ProviderError
from shipline.phases import VERDICT_SCHEMA, get_phase
from shipline.phases.base import PhaseSpec
from shipline.providers.base import CompletionRequest, Message, Role
from shipline.providers.router import CallRecord
from shipline.store import models as m

OnEvent = Callable[[int, str, str], None]


class LeaseLost(Exception):
    """Another worker took this step over (our lease expired); drop our result."""


@dataclass(frozen=True)
class Claim:
    step_id: int
    ticket_id: int
    phase: str
    token: str  # the lease owner value: worker id and claim number
    resumed: bool  # the step was claimed before by a worker that did not finish it


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


def renew_lease(session: Session, claim: Claim, until: Any) -> None:
    """Fence: extend our lease, or raise LeaseLost if the step is no longer ours."""
    result = session.execute(
        update(m.Step)
        .where(m.Step.id == claim.step_id, m.Step.lease_owner == claim.token)
        .values(lease_expires_at=until)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(f"step {claim.step_id} is no longer leased to {claim.token}")


def load_context(session: Session, claim: Claim) -> AttemptContext:
    step = session.get(m.Step, claim.step_id)
    assert step is not None
    ticket = step.ticket
    phase = get_phase(step.phase)
    available = {
        get_phase(s.phase).deliverable: s.deliverable
        for s in ticket.steps
        if s.position < step.position and s.deliverable is not None
    }
    inputs = {name: available[name] for name in phase.inputs if name in available}
    history = []
    pending = None
    for attempt in step.attempts:
        if attempt.verdict is None:
            pending = attempt
        elif not attempt.verdict.passed:
            history.append(
                {"attempt": attempt.number, "objections": list(attempt.verdict.objections)}
            )
    number = pending.number if pending else max((a.number for a in step.attempts), default=0) + 1
    view = TicketView(
        ticket.id, ticket.kind, ticket.title, ticket.body, ticket.lane, ticket.sensitive
    )
    return AttemptContext(
        view, phase, inputs, history, step.note, number, pending.text if pending else None
    )


class AttemptRunner:
    """Runs one attempt of a claimed step against a project's router and store."""

    def __init__(self, project: Any, on_event: OnEvent | None = None) -> None:
        self.project = project
        self.settings = project.settings
        self.store = project.store
        self.on_event = on_event or (lambda _t, _k, _m: None)

    # -- recording -------------------------------------------------------------------------

    def _recorder(self, claim: Claim, role: Role, number: int) -> Callable[[CallRecord], None]:
        def record(call: CallRecord) -> None:
            with self.store.session() as session:
                session.add(
                    m.Call(
                        ticket_id=claim.ticket_id,
                        step_id=claim.step_id,
                        phase=claim.phase,
                        role=role,
                        attempt=number,
                        provider=call.provider,
                        model=call.model,
                        tier=call.tier,
                        input_tokens=call.input_tokens,
                        output_tokens=call.output_tokens,
                        cached_tokens=call.cached_tokens,
                        latency_ms=call.latency_ms,
                        cost=call.cost,
                        fallback=call.fallback,
                        error=call.error,
                    )
                )

        return record

    def _emit(self, ticket_id: int, kind: str, message: str) -> None:
        self.on_event(ticket_id, kind, message)

    # -- the attempt -------------------------------------------------------------------------

    def run(self, claim: Claim, lease_until: Callable[[], Any]) -> None:
        with self.store.session() as session:
            ctx = load_context(session, claim)
        phase = ctx.phase
        settings = self.settings.phase(phase.name)
        text = ctx.pending
        try:
            if text is None:
                text, truncated, messages = self._produce(claim, ctx)
                with self.store.session() as session:
                    renew_lease(session, claim, lease_until())
                    step = session.get(m.Step, claim.step_id)
                    assert step is not None
                    session.add(
                        m.Attempt(
                            step_id=step.id,
                            number=ctx.number,
                            text=text,
                            prompt=messages,
                            worker=claim.token,
                            truncated=truncated,
                        )
                    )
                    event(
                        session,
                        claim.ticket_id,
                        "attempt",
                        f"{phase.name} attempt {ctx.number}: {phase.deliverable} produced "
                        f"({len(text)} chars{', prompt truncated' if truncated else ''})",
                    )
            else:
                self._emit(
                    claim.ticket_id,
                    "resume",
                    f"{phase.name} attempt {ctx.number}: validating the attempt a lost "
                    "worker produced",
                )
            objections = phase.check(text, ctx.inputs)
            source = "checks"
            if not objections and settings.validator:
                objections, source = self._validate(claim, ctx, text)
        except (ProviderError, BudgetExceeded, ConfigError) as exc:
            self._hand_off(claim, lease_until, f"{phase.name}: {exc}")
            return
        self._commit_verdict(claim, ctx, lease_until, not objections, source, objections)

    def _produce(self, claim: Claim, ctx: AttemptContext) -> tuple[str, bool, list[dict[str, str]]]:
        phase = ctx.phase
        settings = self.settings.phase(phase.name)
        prompt = build_prompt(
            phase,
            {
                "ticket": ctx.ticket,
                "inputs": ctx.inputs,
                "history": ctx.history,
                "note": ctx.note,
                "deliverable": phase.deliverable,
                "phase": phase,
            },
            settings.input_token_budget,
        )
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
        routed = self.project.router.complete(
            self.settings.tier_for(phase.name),
            request,
            sensitive=ctx.ticket.sensitive,
            record=self._recorder(claim, "producer", ctx.number),
        )
        text = routed.completion.text.strip()
        if phase.output == "json":
            text = strip_fence(text)
        messages = [{"role": msg.role, "content": msg.content} for msg in prompt.messages]
        return text + "\n", prompt.truncated, messages

    def _validate(self, claim: Claim, ctx: AttemptContext, text: str) -> tuple[list[str], str]:
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
        last = ""
        for _ in range(tries):
            request = CompletionRequest(
                messages=(Message("system", system), Message("user", user)),
                phase=phase.name,
                role="validator",
                attempt=ctx.number,
                ticket_kind=ctx.ticket.kind,
                ticket_title=ctx.ticket.title,
                max_tokens=self.settings.validator.max_output_tokens,
                json_schema=VERDICT_SCHEMA,
            )
            routed = self.project.router.complete(
                self.settings.phase(phase.name).validator_tier,
                request,
                sensitive=ctx.ticket.sensitive,
                record=self._recorder(claim, "validator", ctx.number),
            )
            last = routed.completion.text
            verdict = parse_verdict(last)
            if verdict is not None:
                return ([] if verdict.passed else verdict.objections), "validator"
        snippet = last.strip().replace("\n", " ")[:160]
        return [
            f"the validator's answer was not a valid JSON verdict after {tries} tries "
            f"(last: {snippet!r})"
        ], "error"

    # -- transitions -------------------------------------------------------------------------

    def _commit_verdict(
        self,
        claim: Claim,
        ctx: AttemptContext,
        lease_until: Callable[[], Any],
        passed: bool,
        source: str,
        objections: list[str],
    ) -> None:
        with self.store.session() as session:
            renew_lease(session, claim, lease_until())
            step = session.get(m.Step, claim.step_id)
            assert step is not None
            ticket = step.ticket
            attempt = session.scalars(
                select(m.Attempt).where(
                    m.Attempt.step_id == step.id, m.Attempt.number == ctx.number
                )
            ).one()
            session.add(
                m.Verdict(
                    attempt_id=attempt.id, passed=passed, source=source, objections=objections
                )
            )
            step.attempts_used += 1
            release(step)
            name = ctx.phase.name
            if passed:
                step.status = m.PASSED
                step.deliverable = attempt.text
                step.finished_at = m.utcnow()
                event(
                    session, ticket.id, "passed", f"{name} attempt {ctx.number}: passed ({source})"
                )
                status = advance(session, ticket, self.settings)
                message = f"{name} passed on attempt {ctx.number} → {status}"
            elif step.attempts_used >= step.attempts_allowed:
                step.status = m.FAILED
                step.finished_at = m.utcnow()
                event(
                    session,
                    ticket.id,
                    "failed",
                    f"{name} attempt {ctx.number}: {len(objections)} objection(s) ({source})",
                )
                reason = (
                    f"{name} used {step.attempts_used}/{step.attempts_allowed} attempts; "
                    "remaining objections: " + "; ".join(objections)
                )
                hand_off(session, ticket, reason)
                message = f"{name} failed attempt {ctx.number} → needs-human"
            else:
                step.status = m.PENDING
                ticket.status = m.QUEUED
                ticket.updated_at = m.utcnow()
                event(
                    session,
                    ticket.id,
                    "failed",
                    f"{name} attempt {ctx.number}: {len(objections)} objection(s) ({source}): "
                    + "; ".join(objections),
                )
                message = f"{name} attempt {ctx.number} rejected: {objections[0]}"
        self._emit(claim.ticket_id, "verdict", message)

    def _hand_off(self, claim: Claim, lease_until: Callable[[], Any], reason: str) -> None:
        with self.store.session() as session:
            renew_lease(session, claim, lease_until())
            step = session.get(m.Step, claim.step_id)
            assert step is not None
            release(step)
            step.status = m.PENDING
            hand_off(session, step.ticket, reason)
        self._emit(claim.ticket_id, "handoff", reason)


def release(step: m.Step) -> None:
    step.lease_owner = None
    step.lease_expires_at = None


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
    children = list(session.scalars(select(m.Ticket).where(m.Ticket.parent_id == parent.id)))
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
