"""Tickets in the store: create, look up, and the human's moves (approve, retry, cancel).

The views a front-end reads (list, detail, a deliverable's text) are built in `shipline.api`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from shipline.config import Settings
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


# ---- the human's moves ----------------------------------------------------------------------


def _touch(ticket: m.Ticket, status: str) -> None:
    ticket.status = status
    ticket.updated_at = m.utcnow()


def approve(store: Store, settings: Settings, ticket_id: int, text: str | None = None) -> str:
    """Accept the current phase's deliverable as it stands (or as the human edited it)."""
    from shipline.engine.loop import advance

    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        if ticket.status != m.NEEDS_HUMAN:
            raise TicketError(f"ticket #{ticket_id} is {ticket.status}, not needs-human")
        step = current_step(ticket)
        if step is None:
            raise TicketError(f"ticket #{ticket_id} has no phase waiting for approval")
        if text is None:
            if not step.attempts:
                raise TicketError(
                    f"nothing to approve: phase {step.phase} of #{ticket_id} has no attempt; "
                    "use `shipline retry` or `shipline approve --file`"
                )
            text = step.attempts[-1].text
        phase = get_phase(step.phase)
        if phase.output == "json":  # children.json is acted on, so it must be well formed
            inputs = {
                get_phase(s.phase).deliverable: s.deliverable
                for s in ticket.steps
                if s.position < step.position and s.deliverable is not None
            }
            problems = phase.check(text, inputs)
            if problems:
                raise TicketError(
                    f"{phase.deliverable} cannot be approved as it is: " + "; ".join(problems)
                )
        number = max((a.number for a in step.attempts), default=0) + 1
        attempt = m.Attempt(step_id=step.id, number=number, text=text, worker="human")
        session.add(attempt)
        session.flush()
        session.add(m.Verdict(attempt_id=attempt.id, passed=True, source="human", objections=[]))
        step.status = m.APPROVED
        step.deliverable = text
        step.lease_owner = None
        step.finished_at = m.utcnow()
        ticket.handoff_reason = None
        event(session, ticket.id, "approved", f"{step.phase}: accepted by a human")
        return advance(session, ticket, settings)


def retry(store: Store, ticket_id: int, note: str | None, attempts: int) -> None:
    """Give the current phase `attempts` more tries, with the human's note in its context."""
    if attempts < 1:
        raise TicketError(f"--attempts must be >= 1 (got {attempts})")
    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        if ticket.status != m.NEEDS_HUMAN:
            raise TicketError(f"ticket #{ticket_id} is {ticket.status}, not needs-human")
        step = current_step(ticket)
        if step is None:
            raise TicketError(f"ticket #{ticket_id} has no phase to retry")
        step.attempts_allowed = step.attempts_used + attempts
        step.status = m.PENDING
        step.lease_owner = None
        step.lease_expires_at = None
        if note:
            step.note = note
        ticket.handoff_reason = None
        _touch(ticket, m.QUEUED)
        event(
            session,
            ticket.id,
            "retry",
            f"{step.phase}: {attempts} more attempt(s)" + (f", note: {note}" if note else ""),
        )


def cancel(store: Store, ticket_id: int) -> list[int]:
    """End a ticket (and, for an epic, its unfinished children). Returns the ids cancelled."""
    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        if ticket.status in m.FINAL_STATUSES:
            raise TicketError(f"ticket #{ticket_id} is already {ticket.status}")
        cancelled = []
        pending = [ticket]
        while pending:
            current = pending.pop()
            if current.status in m.FINAL_STATUSES:
                continue
            for step in current.steps:
                step.lease_owner = None
                step.lease_expires_at = None
                if step.status in (m.PENDING, m.CLAIMED):
                    step.status = m.SKIPPED
            _touch(current, m.CANCELLED)
            current.finished_at = m.utcnow()
            event(session, current.id, "cancelled", "cancelled by a human")
            cancelled.append(current.id)
            pending.extend(
                session.scalars(select(m.Ticket).where(m.Ticket.parent_id == current.id))
            )
        session.flush()
        from shipline.engine.loop import hand_off, settle_parent

        waiting = session.scalars(
            select(m.Ticket)
            .join(m.Dependency, m.Dependency.ticket_id == m.Ticket.id)
            .where(
                m.Dependency.depends_on_id.in_(cancelled), m.Ticket.status.in_(m.ACTIVE_STATUSES)
            )
            .distinct()
        )
        for dependent in waiting:  # it could never start: a human decides what happens now
            blockers = [d for d in cancelled if session.get(m.Dependency, (dependent.id, d))]
            hand_off(
                session,
                dependent,
                "depends on " + ", ".join(f"#{b}" for b in blockers) + ", cancelled",
            )

        settle_parent(
            session, ticket
        )  # a cancelled child may leave its epic with nothing to wait for
        return cancelled
