"""Tickets in the store: create them and look them up.

Every change of a ticket's or a step's status after creation (a claim, a verdict, a human's
approve, retry or cancel) lives in engine/lifecycle.py. The views a front-end reads (the
list, one ticket in full, a deliverable's text) are built in `shipline.api`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from shipline.config import Settings
from shipline.engine.routes import route_for
from shipline.errors import TicketError
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
