"""The bill summed by the store (`costs.grouped`, one GROUP BY) equals the pure rules
(`costs.aggregate` over every call row), for every grouping, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shipline.costs import GROUP_BY, CallRow, aggregate, bills, grouped
from shipline.store import models as m
from shipline.store.db import Store, open_store


@pytest.fixture
def store(tmp_path: Path, store_url: str | None) -> Iterator[Store]:
    opened = open_store(store_url or "sqlite:///bill.db", tmp_path, create=True)
    yield opened
    opened.close()


def fill(store: Store) -> list[CallRow]:
    """Three tickets and a queue item's calls: known, unknown and free prices, errors,
    fallbacks, estimates, two UTC days (one call just before midnight UTC, late evening west
    of it)."""
    rng = random.Random(3)
    rows: list[CallRow] = []
    with store.session() as session:
        tickets = []
        for n in range(3):
            ticket = m.Ticket(kind="feature", title=f"t{n}", route=["plan"], status=m.DONE)
            ticket.steps.append(m.Step(position=0, phase="plan", attempts_allowed=3))
            session.add(ticket)
            tickets.append(ticket)
        session.flush()
        day = datetime(2026, 3, 14, 23, 59, 30, tzinfo=UTC)
        for i in range(60):
            ticket = tickets[i % 3] if i % 7 else None
            error = "HTTP 500" if i % 11 == 0 else None
            tokens_in = 0 if error and i % 2 else rng.randint(10, 500)
            cost = None if i % 5 == 0 else round(rng.uniform(0, 0.01), 6)
            row = CallRow(
                ticket_id=ticket.id if ticket else None,
                phase=rng.choice(["plan", "review", "send"]),
                model=rng.choice(["gpt-4o", "ours-7b", ""]),
                provider=rng.choice(["openai", "inhouse"]),
                tier=rng.choice(["top", "cheap"]),
                created_at=day + timedelta(seconds=i),
                input_tokens=tokens_in,
                output_tokens=rng.randint(0, 50),
                cached_tokens=rng.randint(0, 5),
                cost=cost,
                fallback=i % 4 == 0,
                error=error,
                estimated=i % 6 == 0,  # a call whose worker died before it settled
            )
            rows.append(row)
            session.add(
                m.Call(
                    ticket_id=row.ticket_id,
                    step_id=ticket.steps[0].id if ticket else None,
                    owner_kind=None if ticket else m.OwnerKind.WORK,
                    owner_id=None if ticket else 1,
                    role="producer",
                    attempt=1,
                    **{
                        k: getattr(row, k) for k in CallRow.__dataclass_fields__ if k != "ticket_id"
                    },
                )
            )
    return rows


@pytest.mark.parametrize("by", [None, *GROUP_BY])
def test_the_store_sums_the_bill_as_the_pure_rules_do(store: Store, by: str | None) -> None:
    rows = fill(store)
    with store.session() as session:
        summed = grouped(session, by)  # type: ignore[arg-type]
    expected = aggregate(rows, by)  # type: ignore[arg-type]
    assert [g.key for g in summed] == [g.key for g in expected]
    for got, want in zip(summed, expected, strict=True):
        got_dict, want_dict = got.as_dict(), want.as_dict()
        assert got_dict.pop("cost_usd") == pytest.approx(want_dict.pop("cost_usd"))
        assert got_dict.pop("estimated_usd") == pytest.approx(want_dict.pop("estimated_usd"))
        assert got_dict == want_dict  # counts, tokens, and the cost as shown ("$0.12 + unknown")


def test_each_tickets_bill_comes_from_one_query(store: Store) -> None:
    rows = fill(store)
    with store.session() as session:
        by_ticket = bills(session)
    expected = {g.key: g for g in aggregate(rows, "ticket") if g.key != "-"}
    assert sorted(by_ticket) == sorted(int(k[1:]) for k in expected)
    for ticket_id, group in by_ticket.items():
        assert group.cost_text == expected[f"#{ticket_id}"].cost_text
        assert group.calls == expected[f"#{ticket_id}"].calls
