"""Ticket views from the store: the list, one ticket in full, one deliverable's text.

Read-only: each builder opens one session, reads, and returns views that outlive it.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from shipline.api.views import (
    AttemptView,
    CallView,
    ChildView,
    EventView,
    MergeView,
    PhaseView,
    TicketDetail,
    TicketSummary,
    VerdictView,
)
from shipline.costs import TOTAL, CostGroup, bill, bills
from shipline.engine.tickets import current_step, get_ticket
from shipline.errors import TicketError
from shipline.phases import get_phase
from shipline.store import models as m
from shipline.store.db import Store


def ticket_summary(
    session: Session, ticket: m.Ticket, charges: CostGroup | None = None
) -> TicketSummary:
    """`charges`: the ticket's bill when the caller read it already (a list reads them all
    in one query)."""
    step = current_step(ticket)
    if charges is None:
        charges = bill(session, m.Call.ticket_id == ticket.id)
    return TicketSummary(
        id=ticket.id,
        kind=ticket.kind,
        title=ticket.title,
        lane=ticket.lane,
        sensitive=ticket.sensitive,
        status=ticket.status,
        phase=step.phase if step else None,
        phases_done=sum(1 for s in ticket.steps if s.status in m.STEP_DONE),
        phases_total=len(ticket.steps),
        attempts=sum(s.attempts_used for s in ticket.steps),
        parent_id=ticket.parent_id,
        tokens=charges.input_tokens + charges.output_tokens,
        cost=charges.cost_usd,
        cost_text=charges.cost_text,
        unknown_price_calls=charges.unknown_calls,
        handoff_reason=ticket.handoff_reason,
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
    )


def list_tickets(
    store: Store, status: str | None = None, *, limit: int | None = None
) -> list[TicketSummary]:
    """Every ticket (or those with `status`), oldest first; with `limit`, only the newest
    `limit` of them (`count_tickets` says how many there are). Three queries, however many."""
    with store.session() as session:
        ids = select(m.Ticket.id)
        if status:
            ids = ids.where(m.Ticket.status == status)
        if limit is not None:
            ids = ids.order_by(m.Ticket.id.desc()).limit(limit)
        page = ids.scalar_subquery() if limit is not None else ids
        query = (
            select(m.Ticket)
            .where(m.Ticket.id.in_(page))
            .order_by(m.Ticket.id)
            .options(selectinload(m.Ticket.steps))
        )
        tickets = list(session.scalars(query))
        charges = bills(session, m.Call.ticket_id.in_(page))
        return [ticket_summary(session, t, charges.get(t.id, CostGroup(TOTAL))) for t in tickets]


def count_tickets(store: Store, status: str | None = None) -> int:
    """How many tickets there are (with `status`)."""
    with store.session() as session:
        query = select(func.count()).select_from(m.Ticket)
        if status:
            query = query.where(m.Ticket.status == status)
        return int(session.scalar(query) or 0)


def ticket_detail(store: Store, ticket_id: int) -> TicketDetail:
    """Everything `ticket show` prints: phases, attempts, verdicts, calls, events."""
    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        calls = list(
            session.scalars(select(m.Call).where(m.Call.ticket_id == ticket.id).order_by(m.Call.id))
        )
        children = session.scalars(
            select(m.Ticket).where(m.Ticket.parent_id == ticket.id).order_by(m.Ticket.id)
        ).all()
        depends_on = session.scalars(
            select(m.Dependency.depends_on_id).where(m.Dependency.ticket_id == ticket.id)
        ).all()
        merge = session.scalars(select(m.Merge).where(m.Merge.ticket_id == ticket.id)).first()
        events = session.scalars(
            select(m.Event).where(m.Event.ticket_id == ticket.id).order_by(m.Event.id)
        ).all()
        return TicketDetail(
            **dict(ticket_summary(session, ticket)),
            body=ticket.body,
            route=list(ticket.route),
            children=[
                ChildView(id=c.id, title=c.title, status=c.status, key=c.child_key)
                for c in children
            ],
            depends_on=list(depends_on),
            merge=(
                MergeView(
                    target=merge.target,
                    commit=merge.commit,
                    mode=merge.mode,
                    url=merge.url,
                    at=merge.merged_at,
                )
                if merge is not None
                else None
            ),
            phases=[_phase(session, step, calls) for step in ticket.steps],
            calls=[_call(c) for c in calls],
            events=[EventView(at=e.created_at, kind=e.kind, message=e.message) for e in events],
        )


def _phase(session: Session, step: m.Step, calls: list[m.Call]) -> PhaseView:
    step_calls = [c for c in calls if c.step_id == step.id]
    charges = bill(session, m.Call.step_id == step.id)
    return PhaseView(
        phase=step.phase,
        deliverable=get_phase(step.phase).deliverable,
        status=step.status,
        attempts_used=step.attempts_used,
        attempts_allowed=step.attempts_allowed,
        started_at=step.started_at,
        finished_at=step.finished_at,
        seconds=(
            (step.finished_at - step.started_at).total_seconds()
            if step.started_at and step.finished_at
            else None
        ),
        tokens_in=sum(c.input_tokens for c in step_calls),
        tokens_out=sum(c.output_tokens for c in step_calls),
        cost=charges.cost_usd,
        cost_text=charges.cost_text,
        models=sorted({f"{c.provider}/{c.model}" for c in step_calls if c.model}),
        note=step.note,
        origin=step.origin,
        attempts=[_attempt(a) for a in step.attempts],
    )


def _attempt(attempt: m.Attempt) -> AttemptView:
    verdict = attempt.verdict
    return AttemptView(
        number=attempt.number,
        worker=attempt.worker,
        truncated=attempt.truncated,
        chars=len(attempt.text),
        created_at=attempt.created_at,
        verdict=(
            VerdictView(
                passed=verdict.passed, source=verdict.source, objections=list(verdict.objections)
            )
            if verdict is not None
            else None
        ),
    )


def _call(call: m.Call) -> CallView:
    return CallView(
        phase=call.phase,
        role=call.role,
        attempt=call.attempt,
        provider=call.provider,
        model=call.model,
        tier=call.tier,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cached_tokens=call.cached_tokens,
        latency_ms=round(call.latency_ms, 1),
        cost=call.cost,
        fallback=call.fallback,
        error=call.error,
    )


def deliverable_text(store: Store, ticket_id: int, name: str) -> str:
    """The accepted deliverable `name` (a file name or phase), or the latest attempt at it."""
    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        for step in ticket.steps:
            if name in (step.phase, get_phase(step.phase).deliverable):
                if step.deliverable is not None:
                    return step.deliverable
                if step.attempts:
                    return step.attempts[-1].text
                raise TicketError(f"ticket #{ticket_id} has no attempt at {name} yet")
        names = ", ".join(get_phase(s.phase).deliverable for s in ticket.steps)
        raise TicketError(f"ticket #{ticket_id} has no deliverable {name!r} (it has: {names})")
