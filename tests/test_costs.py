"""The bill (`shipline.costs`, `shipline cost`) and the budgets (`shipline.budgets`).

Aggregation is tested as a pure function; the queries and budgets against a real SQLite
store with real ticket, step and call rows; the command through the real CLI.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import pytest
from sqlalchemy import select

from conftest import Project
from shipline.budgets import over_budget
from shipline.config import BudgetSettings, Settings
from shipline.costs import GROUP_BY, CallRow, aggregate, cost_report, total, usd
from shipline.engine.project import open_project
from shipline.store import models as m
from shipline.store.db import Store, open_store

NOW = datetime(2026, 3, 14, 15, 0, tzinfo=UTC)


def row(**fields: Any) -> CallRow:
    base: dict[str, Any] = {
        "ticket_id": 1,
        "phase": "plan",
        "model": "gpt-4o",
        "provider": "openai",
        "tier": "top",
        "created_at": NOW,
        "input_tokens": 100,
        "output_tokens": 10,
    }
    return CallRow(**{**base, **fields})


# --- aggregation (pure) ----------------------------------------------------------------------


def test_groups_sum_tokens_calls_fallbacks_and_errors() -> None:
    rows = [
        row(provider="groq", cost=0.25, error="server error (HTTP 500)", input_tokens=0),
        row(provider="groq", cost=0.5, cached_tokens=40),
        row(provider="backup", cost=1.0, fallback=True, output_tokens=30),
    ]

    groq, backup = aggregate(rows, "provider")  # in the order of their first call

    assert (groq.key, groq.calls, groq.errors, groq.fallbacks) == ("groq", 2, 1, 0)
    assert (groq.input_tokens, groq.output_tokens, groq.cached_tokens) == (100, 20, 40)
    assert groq.cost_usd == pytest.approx(0.75) and groq.cost_text == "$0.75"
    assert (backup.calls, backup.fallbacks, backup.output_tokens) == (1, 1, 30)
    assert total([backup, groq]).cost_text == "$1.75"


def test_unknown_price_is_unknown_never_zero() -> None:
    (group,) = aggregate([row(cost=None), row(cost=None)], "model")

    assert group.cost_usd is None
    assert group.cost_text == "unknown"
    assert group.as_dict()["cost_usd"] is None
    assert group.as_dict()["unknown_price_calls"] == 2


def test_group_mixing_known_and_unknown_shows_the_known_sum_plus_unknown() -> None:
    (group,) = aggregate([row(cost=0.12), row(cost=None)], None)

    assert group.key == "total"
    assert group.cost_usd == pytest.approx(0.12)
    assert group.cost_text == "$0.12 + unknown"
    assert group.unknown_calls == 1


def test_failed_call_that_used_no_tokens_cost_nothing_but_a_billed_failure_is_unknown() -> None:
    refused = row(cost=None, error="cannot connect", input_tokens=0, output_tokens=0)
    billed = row(cost=None, error="reply is not valid JSON", input_tokens=50, output_tokens=5)

    (only_refused,) = aggregate([refused], "phase")
    (with_billed,) = aggregate([refused, billed], "phase")

    assert only_refused.cost_text == "$0.00"
    assert with_billed.cost_text == "unknown"


def test_a_call_that_never_settled_counts_its_estimate_apart_from_the_known_sum() -> None:
    settled = row(cost=0.12)
    cut_off = row(cost=0.01, input_tokens=400, output_tokens=0, estimated=True)
    cut_off_unpriced = row(cost=None, input_tokens=300, output_tokens=0, estimated=True)

    (group,) = aggregate([settled, cut_off], None)
    (mixed,) = aggregate([settled, cut_off, cut_off_unpriced], None)
    (only_estimate,) = aggregate([cut_off], None)

    assert group.cost_usd == pytest.approx(0.12)  # the known sum stays known
    assert group.cost_text == "$0.12 + ~$0.01 estimated"
    assert (group.input_tokens, group.estimated_calls) == (500, 1)  # its tokens count
    assert group.as_dict()["estimated_usd"] == pytest.approx(0.01)
    assert mixed.cost_text == "$0.12 + unknown + ~$0.01 estimated"
    assert (mixed.estimated_calls, mixed.unknown_calls) == (2, 1)
    assert only_estimate.cost_text == "$0.00 + ~$0.01 estimated"
    assert total([group, only_estimate]).cost_text == "$0.12 + ~$0.02 estimated"


def test_day_groups_by_utc_date_in_order() -> None:
    rows = [
        row(created_at=datetime(2026, 3, 15, 0, 30, tzinfo=UTC), cost=2.0),
        row(created_at=datetime(2026, 3, 14, 23, 59, tzinfo=UTC), cost=1.0),
        row(created_at=datetime(2026, 3, 14, 1, 0, tzinfo=UTC), cost=1.0),
    ]

    days = aggregate(rows, "day")

    assert [(d.key, d.calls, d.cost_text) for d in days] == [
        ("2026-03-14", 2, "$2.00"),
        ("2026-03-15", 1, "$2.00"),
    ]


def test_phases_and_providers_come_in_the_order_of_their_first_call() -> None:
    rows = [row(phase="techspec"), row(phase="plan"), row(phase="techspec"), row(phase="review")]
    assert [g.key for g in aggregate(rows, "phase")] == ["techspec", "plan", "review"]


def test_tickets_sort_by_number_not_text() -> None:
    rows = [row(ticket_id=10), row(ticket_id=9), row(ticket_id=2)]
    assert [g.key for g in aggregate(rows, "ticket")] == ["#2", "#9", "#10"]


def test_usd_shows_cents_or_the_first_significant_digits() -> None:
    assert [usd(x) for x in (0.52, 10.01, 0.5, 0.0004, 0.0, 1.23456)] == [
        "$0.52",
        "$10.01",
        "$0.50",
        "$0.0004",
        "$0.00",
        "$1.2346",
    ]


def test_cli_group_choices_match_the_cost_module() -> None:
    from shipline.cli import CostBy

    assert get_args(CostBy) == GROUP_BY


# --- against a real SQLite store ---------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store("sqlite:///bill.db", tmp_path, create=True)
    yield opened
    opened.close()


def add_ticket(store: Store, phases: tuple[str, ...] = ("plan", "review")) -> dict[str, int]:
    """A ticket with one step per phase; returns {phase: step id, "ticket": ticket id}."""
    with store.session() as session:
        ticket = m.Ticket(kind="feature", title="t", route=list(phases), status=m.RUNNING)
        for position, phase in enumerate(phases):
            ticket.steps.append(m.Step(position=position, phase=phase, attempts_allowed=3))
        session.add(ticket)
        session.flush()
        ids = {step.phase: step.id for step in ticket.steps}
        return {**ids, "ticket": ticket.id}


def add_call(store: Store, ids: dict[str, int], phase: str = "plan", **fields: Any) -> None:
    values: dict[str, Any] = {
        "ticket_id": ids["ticket"],
        "step_id": ids[phase],
        "phase": phase,
        "role": "producer",
        "attempt": 1,
        "provider": "openai",
        "model": "gpt-4o",
        "tier": "top",
        "input_tokens": 100,
        "output_tokens": 10,
        "cost": 0.01,
        **fields,
    }
    with store.session() as session:
        session.add(m.Call(**values))


def test_cost_report_reads_one_ticket_or_all_from_the_calls_table(store: Store) -> None:
    first, second = add_ticket(store), add_ticket(store)
    add_call(store, first, "plan", cost=0.25)
    add_call(store, first, "review", cost=None, provider="inhouse", model="ours-7b", tier="mid")
    add_call(store, second, "plan", cost=1.0)

    only_first = cost_report(store, ticket_id=first["ticket"], by="phase")
    everything = cost_report(store, by="provider")

    assert [(g.key, g.cost_text) for g in only_first.groups] == [
        ("plan", "$0.25"),
        ("review", "unknown"),
    ]
    assert only_first.total.cost_text == "$0.25 + unknown"
    assert [(g.key, g.calls, g.cost_text) for g in everything.groups] == [
        ("openai", 2, "$1.25"),
        ("inhouse", 1, "unknown"),
    ]
    assert everything.as_dict()["total"]["calls"] == 3


def test_cost_report_for_an_unknown_ticket_is_a_ticket_error(store: Store) -> None:
    from shipline.errors import TicketError

    with pytest.raises(TicketError, match="no ticket #42"):
        cost_report(store, ticket_id=42)


# --- budgets ----------------------------------------------------------------------------------


def budgets(per_ticket: float | None = None, per_day: float | None = None) -> Settings:
    return Settings(budgets=BudgetSettings(per_ticket_usd=per_ticket, per_day_usd=per_day))


def check(store: Store, settings: Settings, ticket_id: int, now: datetime = NOW) -> str | None:
    with store.session() as session:
        return over_budget(session, settings, ticket_id, now=now)


def test_no_budget_set_never_stops_a_ticket(store: Store) -> None:
    ids = add_ticket(store)
    add_call(store, ids, cost=1000.0, created_at=NOW)
    assert check(store, Settings(), ids["ticket"]) is None


def test_ticket_over_its_budget_gets_a_reason_with_both_figures(store: Store) -> None:
    ids = add_ticket(store)
    add_call(store, ids, "plan", cost=0.30)
    add_call(store, ids, "review", cost=0.22, error="server error (HTTP 500)")

    reason = check(store, budgets(per_ticket=0.50), ids["ticket"])

    assert reason == (
        f"ticket #{ids['ticket']} spent $0.52 of its $0.50 budget ([budgets] per_ticket_usd)"
    )


def test_ticket_under_its_budget_may_go_on_and_other_tickets_do_not_count(store: Store) -> None:
    mine, other = add_ticket(store), add_ticket(store)
    add_call(store, mine, cost=0.49)
    add_call(store, other, cost=5.0)

    assert check(store, budgets(per_ticket=0.50), mine["ticket"]) is None
    assert check(store, budgets(per_ticket=0.50), other["ticket"]) is not None


def test_day_budget_counts_every_ticket_since_midnight_utc_only(store: Store) -> None:
    first, second = add_ticket(store), add_ticket(store)
    midnight = datetime(2026, 3, 14, tzinfo=UTC)
    add_call(store, first, cost=6.0, created_at=midnight + timedelta(minutes=1))
    add_call(store, second, cost=4.01, created_at=NOW - timedelta(hours=1))
    add_call(store, second, cost=50.0, created_at=midnight - timedelta(seconds=1))  # yesterday

    reason = check(store, budgets(per_day=10.0), first["ticket"])
    tomorrow = check(store, budgets(per_day=10.0), first["ticket"], now=NOW + timedelta(days=1))

    assert reason == "today's spend $10.01 reached per_day_usd $10.00 (UTC day 2026-03-14)"
    assert tomorrow is None


def test_day_starts_at_utc_midnight_whatever_the_callers_zone(store: Store) -> None:
    ids = add_ticket(store)
    add_call(store, ids, cost=3.0, created_at=datetime(2026, 3, 14, 2, 0, tzinfo=UTC))
    add_call(store, ids, cost=7.0, created_at=datetime(2026, 3, 13, 23, 0, tzinfo=UTC))
    # 20:00 on the 13th in UTC-8 is 04:00 on the 14th in UTC: only the first call is today's
    evening_west = datetime(2026, 3, 13, 20, 0, tzinfo=timezone(timedelta(hours=-8)))

    reason = check(store, budgets(per_day=3.0), ids["ticket"], now=evening_west)

    assert reason == "today's spend $3.00 reached per_day_usd $3.00 (UTC day 2026-03-14)"


def test_reaching_the_limit_exactly_stops_the_ticket(store: Store) -> None:
    ids = add_ticket(store)
    add_call(store, ids, cost=0.50)
    assert check(store, budgets(per_ticket=0.50), ids["ticket"]) is not None


def test_free_calls_never_reach_a_budget_and_a_zero_budget_stops_after_a_paid_call(
    store: Store,
) -> None:
    ids = add_ticket(store)
    add_call(store, ids, provider="script", cost=0.0)
    assert check(store, budgets(per_ticket=0.0), ids["ticket"]) is None

    add_call(store, ids, cost=0.0001)
    assert check(store, budgets(per_ticket=0.0), ids["ticket"]) == (
        f"ticket #{ids['ticket']} spent $0.0001 of its $0.00 budget ([budgets] per_ticket_usd)"
    )


def test_unknown_prices_are_not_counted_but_the_reason_says_how_many(store: Store) -> None:
    ids = add_ticket(store)
    add_call(store, ids, cost=0.60)
    add_call(store, ids, cost=None, provider="inhouse")
    add_call(store, ids, cost=None, provider="inhouse")
    add_call(store, ids, cost=None, error="HTTP 500", input_tokens=0, output_tokens=0)

    reason = check(store, budgets(per_ticket=0.50), ids["ticket"])
    unknown_only = add_ticket(store)
    add_call(store, unknown_only, cost=None, provider="inhouse")

    assert reason == (
        f"ticket #{ids['ticket']} spent $0.60 (+ 2 calls at an unknown price, not counted) "
        "of its $0.50 budget ([budgets] per_ticket_usd)"
    )
    assert check(store, budgets(per_ticket=0.50), unknown_only["ticket"]) is None


def test_calls_that_never_settled_count_towards_a_budget_at_their_estimate(store: Store) -> None:
    ids = add_ticket(store)
    add_call(store, ids, cost=0.30)
    add_call(store, ids, cost=0.25, output_tokens=0, estimated=True)  # its worker died

    reason = check(store, budgets(per_ticket=0.50), ids["ticket"])
    day = check(store, budgets(per_day=0.55), ids["ticket"], now=m.utcnow())

    assert reason == (
        f"ticket #{ids['ticket']} spent $0.55 (~$0.25 of it estimated) of its $0.50 budget "
        "([budgets] per_ticket_usd)"
    )
    assert day is not None and day.startswith("today's spend $0.55 (~$0.25 of it estimated)")


def test_both_budgets_reached_gives_both_reasons(store: Store) -> None:
    ids = add_ticket(store)
    add_call(store, ids, cost=2.0, created_at=NOW)

    reason = check(store, budgets(per_ticket=1.0, per_day=1.5), ids["ticket"])

    assert reason is not None
    assert reason.startswith(f"ticket #{ids['ticket']} spent $2.00 of its $1.00 budget")
    assert "; today's spend $2.00 reached per_day_usd $1.50" in reason


# --- the command ------------------------------------------------------------------------------


def test_cost_command_prints_unknown_and_json_never_zero(sqlite_project: Project) -> None:
    ticket_id = sqlite_project.add("feature", "price me")
    opened = open_project(sqlite_project.root)
    with opened.store.session() as session:
        steps = session.scalars(select(m.Step).where(m.Step.ticket_id == ticket_id))
        ids = {**{step.phase: step.id for step in steps}, "ticket": ticket_id}
    add_call(opened.store, ids, "discovery", cost=0.0123, provider="groq", tier="mid")
    add_call(opened.store, ids, "techspec", cost=None, provider="inhouse", tier="top")
    opened.close()

    table = sqlite_project.cli("cost", "--by", "provider").stdout
    data = json.loads(sqlite_project.cli("cost", "--ticket", str(ticket_id), "--json").stdout)

    assert "unknown" in table and "$0.0123" in table
    lines = {line.split()[1]: line for line in table.splitlines() if line.startswith("│ ")}
    assert "unknown" in lines["inhouse"] and "$0" not in lines["inhouse"]
    assert "$0.0123 + unknown" in lines["total"]
    assert data["by"] is None and data["ticket"] == ticket_id
    assert data["total"]["cost_usd"] == pytest.approx(0.0123)
    assert data["total"]["unknown_price_calls"] == 1
    assert data["total"]["cost"] == "$0.0123 + unknown"


def test_cost_command_rejects_an_unknown_grouping_and_an_unknown_ticket(
    sqlite_project: Project,
) -> None:
    bad_by = sqlite_project.cli("cost", "--by", "colour", expect=2)
    missing = sqlite_project.cli("cost", "--ticket", "99", expect=2)

    assert "colour" in bad_by.stderr and "provider" in bad_by.stderr
    assert "no ticket #99" in missing.stderr


def test_cost_command_with_no_calls_says_so(sqlite_project: Project) -> None:
    assert "no provider calls recorded yet" in sqlite_project.cli("cost").stdout
