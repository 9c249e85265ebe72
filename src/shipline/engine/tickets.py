"""Tickets in the store: create and read them.

Every change of a ticket's or a step's status after creation (a claim, a verdict, a human's
approve, retry or cancel) lives in engine/lifecycle.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipline.config import Settings
from shipline.costs import bill
from shipline.engine.routes import route_for
from shipline.errors import TicketError
from shipline.phases import get_phase
from shipline.store import models as m
from shipline.store.db import Store

MAX_TITLE = 300


@dataclass(frozen=True)
class NewTicket:
    kind: str
    title: str
    body: str = ""
    lane: int = 2
    sensitive: bool = False
    parent_id: int | None = None
    child_key: str | None = None


def event(session: Session, ticket_id: int, kind: str, message: str) -> None:
    session.add(m.Event(ticket_id=ticket_id, kind=kind, message=message))


def validate_new(settings: Settings, new: NewTicket) -> list[str]:
    """Reject a malformed ticket before it reaches the store; returns its route."""
    title = new.title.strip()
    if not title:
        raise TicketError("a ticket needs a non-empty title")
    if len(title) > MAX_TITLE:
        raise TicketError(f"the title is {len(title)} characters; the limit is {MAX_TITLE}")
    if new.lane not in (1, 2, 3):
        raise TicketError(f"lane must be 1, 2 or 3 (got {new.lane})")
    return route_for(settings, new.kind, new.lane)


def add_ticket(session: Session, settings: Settings, new: NewTicket) -> m.Ticket:
    route = validate_new(settings, new)
    ticket = m.Ticket(
        kind=new.kind,
        title=new.title.strip(),
        body=new.body,
        lane=new.lane,
        sensitive=new.sensitive,
        route=route,
        position=0,
        status=m.QUEUED,
        parent_id=new.parent_id,
        child_key=new.child_key,
    )
    for position, phase in enumerate(route):
        ticket.steps.append(
            m.Step(
                position=position,
                phase=phase,
                status=m.PENDING,
                attempts_allowed=settings.phase(phase).max_attempts,
                attempts_used=0,
                claims=0,
            )
        )
    session.add(ticket)
    session.flush()
    event(session, ticket.id, "created", f"{new.kind} ticket, lane {new.lane}: {' → '.join(route)}")
    return ticket


def create_ticket(store: Store, settings: Settings, new: NewTicket) -> int:
    with store.session() as session:
        return add_ticket(session, settings, new).id


def read_body_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TicketError(f"body file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TicketError(f"cannot read body file {path}: {exc}") from None


def get_ticket(session: Session, ticket_id: int) -> m.Ticket:
    ticket = session.get(m.Ticket, ticket_id)
    if ticket is None:
        raise TicketError(f"no ticket #{ticket_id}")
    return ticket


def current_step(ticket: m.Ticket) -> m.Step | None:
    return ticket.steps[ticket.position] if ticket.position < len(ticket.steps) else None


# ---- reading -------------------------------------------------------------------------------


def ticket_summary(session: Session, ticket: m.Ticket) -> dict[str, Any]:
    step = current_step(ticket)
    charges = bill(session, m.Call.ticket_id == ticket.id)
    attempts = sum(s.attempts_used for s in ticket.steps)
    return {
        "id": ticket.id,
        "kind": ticket.kind,
        "title": ticket.title,
        "lane": ticket.lane,
        "sensitive": ticket.sensitive,
        "status": ticket.status,
        "phase": step.phase if step else None,
        "phases_done": sum(1 for s in ticket.steps if s.status in m.STEP_DONE),
        "phases_total": len(ticket.steps),
        "attempts": attempts,
        "parent_id": ticket.parent_id,
        "tokens": charges.input_tokens + charges.output_tokens,
        "cost": charges.cost_usd,
        "cost_text": charges.cost_text,
        "unknown_price_calls": charges.unknown_calls,
        "handoff_reason": ticket.handoff_reason,
        "created_at": ticket.created_at.isoformat(),
        "updated_at": ticket.updated_at.isoformat(),
    }


def list_tickets(store: Store, status: str | None = None) -> list[dict[str, Any]]:
    with store.session() as session:
        query = select(m.Ticket).order_by(m.Ticket.id)
        if status:
            query = query.where(m.Ticket.status == status)
        return [ticket_summary(session, t) for t in session.scalars(query)]


def ticket_detail(store: Store, ticket_id: int) -> dict[str, Any]:
    """Everything `ticket show` prints: phases, attempts, verdicts, calls, events."""
    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        detail = ticket_summary(session, ticket)
        detail["body"] = ticket.body
        detail["route"] = list(ticket.route)
        detail["children"] = [
            {"id": c.id, "title": c.title, "status": c.status, "key": c.child_key}
            for c in session.scalars(
                select(m.Ticket).where(m.Ticket.parent_id == ticket.id).order_by(m.Ticket.id)
            )
        ]
        detail["depends_on"] = list(
            session.scalars(
                select(m.Dependency.depends_on_id).where(m.Dependency.ticket_id == ticket.id)
            )
        )
        merge = session.scalars(select(m.Merge).where(m.Merge.ticket_id == ticket.id)).first()
        detail["merge"] = (
            {
                "target": merge.target,
                "commit": merge.commit,
                "mode": merge.mode,
                "url": merge.url,
                "at": merge.merged_at.isoformat(),
            }
            if merge is not None
            else None
        )
        calls = list(
            session.scalars(select(m.Call).where(m.Call.ticket_id == ticket.id).order_by(m.Call.id))
        )
        phases = []
        for step in ticket.steps:
            step_calls = [c for c in calls if c.step_id == step.id]
            charges = bill(session, m.Call.step_id == step.id)
            phases.append(
                {
                    "phase": step.phase,
                    "deliverable": get_phase(step.phase).deliverable,
                    "status": step.status,
                    "attempts_used": step.attempts_used,
                    "attempts_allowed": step.attempts_allowed,
                    "started_at": step.started_at.isoformat() if step.started_at else None,
                    "finished_at": step.finished_at.isoformat() if step.finished_at else None,
                    "seconds": (
                        (step.finished_at - step.started_at).total_seconds()
                        if step.started_at and step.finished_at
                        else None
                    ),
                    "tokens_in": sum(c.input_tokens for c in step_calls),
                    "tokens_out": sum(c.output_tokens for c in step_calls),
                    "cost": charges.cost_usd,
                    "cost_text": charges.cost_text,
                    "models": sorted({f"{c.provider}/{c.model}" for c in step_calls if c.model}),
                    "note": step.note,
                    "origin": step.origin,  # an inserted step: "ci" or "merge"
                    "attempts": [
                        {
                            "number": a.number,
                            "worker": a.worker,
                            "truncated": a.truncated,
                            "chars": len(a.text),
                            "created_at": a.created_at.isoformat(),
                            "verdict": (
                                {
                                    "passed": a.verdict.passed,
                                    "source": a.verdict.source,
                                    "objections": list(a.verdict.objections),
                                }
                                if a.verdict
                                else None
                            ),
                        }
                        for a in step.attempts
                    ],
                }
            )
        detail["phases"] = phases
        detail["calls"] = [
            {
                "phase": c.phase,
                "role": c.role,
                "attempt": c.attempt,
                "provider": c.provider,
                "model": c.model,
                "tier": c.tier,
                "input_tokens": c.input_tokens,
                "output_tokens": c.output_tokens,
                "cached_tokens": c.cached_tokens,
                "latency_ms": round(c.latency_ms, 1),
                "cost": c.cost,
                "fallback": c.fallback,
                "error": c.error,
            }
            for c in calls
        ]
        detail["events"] = [
            {"at": e.created_at.isoformat(), "kind": e.kind, "message": e.message}
            for e in session.scalars(
                select(m.Event).where(m.Event.ticket_id == ticket.id).order_by(m.Event.id)
            )
        ]
        return detail


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
