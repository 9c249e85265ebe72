"""`ticket show` and `ticket list` never show an unknown price as $0."""

from __future__ import annotations

from pathlib import Path

from shipline.api import list_tickets, ticket_detail
from shipline.config import load_settings
from shipline.engine.tickets import NewTicket, create_ticket
from shipline.store import models as m
from shipline.store.db import open_store


def test_ticket_cost_shows_known_plus_unknown(tmp_path: Path) -> None:
    store = open_store("sqlite:///shipline.db", tmp_path, create=True)
    settings = load_settings(None)
    ticket_id = create_ticket(store, settings, NewTicket("hotfix", "crash"))
    with store.session() as session:
        step = session.get(m.Ticket, ticket_id).steps[0]  # type: ignore[union-attr]
        base = {
            "ticket_id": ticket_id,
            "step_id": step.id,
            "phase": "diagnose",
            "role": "producer",
            "attempt": 1,
            "tier": "mid",
            "input_tokens": 100,
            "output_tokens": 50,
        }
        session.add(m.Call(**base, provider="hosted", model="gpt-x", cost=0.12))
        session.add(m.Call(**base, provider="inhouse", model="ours", cost=None))
        session.add(
            m.Call(
                **{**base, "input_tokens": 0, "output_tokens": 0},
                provider="down",
                model="",
                cost=None,
                error="HTTP 503",
            )
        )
    detail = ticket_detail(store, ticket_id)
    assert detail.cost_text == "$0.12 + unknown"
    assert detail.unknown_price_calls == 1
    assert detail.phases[0].cost_text == "$0.12 + unknown"
    assert detail.phases[1].cost_text == "$0.00"
    assert list_tickets(store)[0].cost_text == "$0.12 + unknown"
    with store.session() as session:
        session.query(m.Call).filter(m.Call.provider == "hosted").delete()
    assert ticket_detail(store, ticket_id).cost_text == "unknown"
    assert ticket_detail(store, ticket_id).cost is None
    store.close()
