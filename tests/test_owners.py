"""Steps share the generic lease (priority, due time), and calls and events may belong to an
owner other than a ticket's step: the bill, the budgets and `ticket show` keep working."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from conftest import Project, make_project
from shipline.budgets import over_budget
from shipline.engine.project import open_project
from shipline.engine.tickets import NewTicket, create_ticket
from shipline.engine.worker import claim_next
from shipline.store import models as m
from shipline.store.work import claim_next as claim_work
from shipline.store.work import enqueue


def set_step(project: Project, ticket_id: int, **values: object) -> None:
    opened = open_project(project.root, db=project.db_url)
    with opened.store.session() as session:
        session.execute(
            update(m.Step)
            .where(m.Step.ticket_id == ticket_id, m.Step.position == 0)
            .values(**values)
        )
    opened.close()


def test_a_higher_priority_step_is_claimed_first(project: Project) -> None:
    opened = open_project(project.root, db=project.db_url)
    ids = [
        create_ticket(opened.store, opened.settings, NewTicket("hotfix", f"bug {i}"))
        for i in range(3)
    ]
    set_step(project, ids[2], priority=5)
    order = []
    while (claimed := claim_next(opened.store, "w", lease_s=60)) is not None:
        order.append(claimed[0].ticket_id)
    assert order == [ids[2], ids[0], ids[1]]
    opened.close()


def test_a_step_due_later_waits_until_it_is_due(project: Project) -> None:
    opened = open_project(project.root, db=project.db_url)
    first = create_ticket(opened.store, opened.settings, NewTicket("hotfix", "later"))
    second = create_ticket(opened.store, opened.settings, NewTicket("hotfix", "now"))
    set_step(project, first, due_at=m.utcnow() + timedelta(hours=1), priority=9)
    claimed = claim_next(opened.store, "w", lease_s=60)
    assert claimed is not None and claimed[0].ticket_id == second
    assert claim_next(opened.store, "w", lease_s=60) is None
    set_step(project, first, due_at=m.utcnow() - timedelta(seconds=1))
    claimed = claim_next(opened.store, "w", lease_s=60)
    assert claimed is not None and claimed[0].ticket_id == first
    opened.close()


def test_calls_and_events_of_another_owner_leave_tickets_untouched(
    tmp_path: Path, store_url: str | None
) -> None:
    project = make_project(tmp_path / "repo", store_url, "\n[budgets]\nper_day_usd = 1.0\n")
    ticket_id = project.add("hotfix", "greet crashes on an empty name")
    project.cli("run")
    before = project.show(ticket_id)

    opened = open_project(project.root, db=project.db_url)
    with opened.store.transaction() as conn:
        item_id = enqueue(conn, "classify", {"message": 1})
        item = claim_work(conn, "w", 60)
        assert item is not None
    with opened.store.session() as session:
        session.add(
            m.Call(
                owner_kind=m.OwnerKind.WORK,
                owner_id=item_id,
                phase="classify",
                role="producer",
                attempt=1,
                provider="hosted",
                model="big",
                tier="cheap",
                input_tokens=100,
                output_tokens=10,
                cost=1.5,
            )
        )
        session.add(
            m.Event(owner_kind=m.OwnerKind.WORK, owner_id=item_id, kind="note", message="hi")
        )
    with opened.store.session() as session:
        # The day's budget counts every call; the ticket's own budget only the ticket's.
        reason = over_budget(session, opened.settings, ticket_id)
        assert reason is not None and "today's spend $1.50" in reason
    opened.close()

    after = project.show(ticket_id)
    assert after["calls"] == before["calls"] and after["events"] == before["events"]
    assert after["cost"] == before["cost"]
    by_ticket = json.loads(project.cli("cost", "--by", "ticket", "--json").stdout)
    keys = [group["key"] for group in by_ticket["groups"]]
    assert keys == [f"#{ticket_id}", "-"]
    assert by_ticket["groups"][1]["cost_usd"] == 1.5
    assert by_ticket["total"]["calls"] == len(before["calls"]) + 1
    assert "classify" in project.cli("cost", "--by", "phase").stdout
    ticket_cost = json.loads(project.cli("cost", "--ticket", str(ticket_id), "--json").stdout)
    assert ticket_cost["total"]["calls"] == len(before["calls"])


def test_a_call_or_event_must_belong_to_a_ticket_or_an_owner(sqlite_project: Project) -> None:
    opened = open_project(sqlite_project.root)
    orphan_call = m.Call(
        phase="x", role="producer", attempt=1, provider="p", model="m", tier="cheap"
    )
    for orphan in (orphan_call, m.Event(kind="note", message="whose?")):
        with pytest.raises(IntegrityError), opened.store.session() as session:
            session.add(orphan)
    with opened.store.session() as session:
        assert session.scalars(select(m.Event).where(m.Event.ticket_id.is_(None))).all() == []
    opened.close()
