"""Spending limits: has a ticket, or today, spent its `[budgets]` allowance?

The engine asks `over_budget` before each provider call and before each external agent's run
(whose cost is known only afterwards), and hands the ticket to a human with the reason it
returns. The spend is read from the calls table, so it counts every
worker on every machine that shares the store.

- `per_ticket_usd`: the known cost of every call of this ticket, retries and failed tries
  included (an epic's children have budgets of their own).
- `per_day_usd`: the known cost of every call of every ticket since 00:00 UTC today.
- A budget is reached when the known spend is at least the limit and more than zero, so
  free calls (local, scripted) never stop a ticket, and a limit of 0 stops a ticket after
  its first paid call.
- Calls at an unknown price cannot be added up. They do not count towards the limit (which
  would be a guess), but a reason names how many there were, so the human reading it knows
  the real spend is higher. Set `price_input_per_mtok`/`price_output_per_mtok` on an
  unlisted provider so that its calls count.
- Calls that never settled (in flight, or cut off when their worker died) count at their
  estimate (their input at the provider's input price), and a reason says how much of the
  spend is estimated.
"""

from __future__ import annotations

from datetime import UTC, datetime, time

from sqlalchemy.orm import Session

from shipline.config import Settings
from shipline.costs import Spend, spend, usd
from shipline.store import models as m


def _unknown(spent: Spend) -> str:
    if not spent.unknown_calls:
        return ""
    calls = "call" if spent.unknown_calls == 1 else "calls"
    return f" (+ {spent.unknown_calls} {calls} at an unknown price, not counted)"


def _reached(spent: Spend, limit: float) -> bool:
    return spent.total_usd > 0 and spent.total_usd >= limit


def _spent(spent: Spend) -> str:
    estimated = f" (~{usd(spent.estimated_usd)} of it estimated)" if spent.estimated_usd else ""
    return f"{usd(spent.total_usd)}{estimated}{_unknown(spent)}"


def day_start(now: datetime) -> datetime:
    """00:00 UTC of the day `now` falls on (UTC)."""
    return datetime.combine(now.astimezone(UTC).date(), time(), tzinfo=UTC)


def over_budget(
    session: Session, settings: Settings, ticket_id: int, *, now: datetime | None = None
) -> str | None:
    """Why `ticket_id` may not make another provider call (or agent run), or None when it may.

    Both budgets are checked; when both are reached, both reasons are given.
    """
    budgets = settings.budgets
    reasons: list[str] = []
    if budgets.per_ticket_usd is not None:
        spent = spend(session, m.Call.ticket_id == ticket_id)
        if _reached(spent, budgets.per_ticket_usd):
            reasons.append(
                f"ticket #{ticket_id} spent {_spent(spent)} "
                f"of its {usd(budgets.per_ticket_usd)} budget ([budgets] per_ticket_usd)"
            )
    if budgets.per_day_usd is not None:
        since = day_start(now or m.utcnow())
        spent = spend(session, m.Call.created_at >= since)
        if _reached(spent, budgets.per_day_usd):
            reasons.append(
                f"today's spend {_spent(spent)} reached "
                f"per_day_usd {usd(budgets.per_day_usd)} (UTC day {since.date().isoformat()})"
            )
    return "; ".join(reasons) or None
