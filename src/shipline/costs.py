"""What the provider calls cost: `shipline cost` grouped by phase, model, provider, day, tier.

The `calls` table is the bill. The rules are pure (`aggregate`, over `CallRow`s); the store
applies the same rules in one GROUP BY (`grouped`), so that `shipline cost` on a big store
reads no rows into Python, and a test holds the two equal. An unknown price is never counted
as 0: a group
whose every priced call is unknown costs "unknown", and a group mixing known and unknown
prices shows the known sum "+ unknown".

A call's price is unknown when its `cost` is NULL and it used tokens: a successful call, or
a failed one that was billed (a reply that could not be parsed). A failed call that used no
tokens (HTTP 500, timeout, refused connection) cost nothing.

A call is written before it is sent, as an estimate (`estimated`: its input tokens counted
from the prompt, priced at the provider's input price, no output), and settled once it
answers. A call whose worker died before that stays an estimate: its tokens count, and its
cost is shown apart from the known sum ("$0.12 + ~$0.01 estimated").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import KeyedColumnElement

from shipline.errors import TicketError
from shipline.store import models as m
from shipline.store.db import Store

GroupBy = Literal["phase", "model", "provider", "day", "tier", "ticket"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
TOTAL = "total"
NO_TICKET = "-"  # the group of the calls that belong to no ticket (grouped by ticket)


def usd(amount: float) -> str:
    """Dollars with 2 to 4 decimals: $0.52, $10.01, $0.0004."""
    whole, frac = f"{amount:.4f}".split(".")
    return f"${whole}.{frac.rstrip('0').ljust(2, '0')}"


def is_unknown_price(cost: float | None, error: str | None, tokens: int) -> bool:
    """Did this call spend money we cannot price? (The rule `unknown_price` states in SQL.)"""
    return cost is None and (error is None or tokens > 0)


def unknown_price() -> ColumnElement[bool]:
    """SQL for `is_unknown_price`, so the store can count unknown prices without loading rows."""
    return and_(
        m.Call.cost.is_(None),
        or_(m.Call.error.is_(None), m.Call.input_tokens + m.Call.output_tokens > 0),
    )


@dataclass(frozen=True)
class CallRow:
    """The part of one `calls` row that the bill needs (`ticket_id` None: a call of another
    owner, such as a queue item's action)."""

    ticket_id: int | None
    phase: str
    model: str
    provider: str
    tier: str
    created_at: datetime
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost: float | None = 0.0
    fallback: bool = False
    error: str | None = None
    estimated: bool = False  # a call that never settled: its tokens and cost are guesses

    def key(self, by: GroupBy | None) -> str:
        if by is None:
            return TOTAL
        if by == "day":
            return self.created_at.date().isoformat()  # the store keeps UTC
        if by == "ticket":
            return NO_TICKET if self.ticket_id is None else f"#{self.ticket_id}"
        return str(getattr(self, by)) or "-"


@dataclass
class CostGroup:
    """Calls, tokens and cost of one group. `known_usd` sums the calls whose price is known;
    `estimated_usd` the estimates of the calls that never settled (priced ones)."""

    key: str
    calls: int = 0
    errors: int = 0
    fallbacks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    known_usd: float = 0.0
    priced_calls: int = 0
    unknown_calls: int = 0
    estimated_calls: int = 0
    estimated_priced: int = 0
    estimated_usd: float = 0.0

    def add(self, row: CallRow) -> None:
        self.calls += 1
        self.errors += row.error is not None
        self.fallbacks += row.fallback
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cached_tokens += row.cached_tokens
        self.estimated_calls += row.estimated
        if is_unknown_price(row.cost, row.error, row.input_tokens + row.output_tokens):
            self.unknown_calls += 1
        elif row.cost is not None and row.estimated:
            self.estimated_priced += 1
            self.estimated_usd += row.cost
        elif row.cost is not None:
            self.priced_calls += 1
            self.known_usd += row.cost

    @property
    def cost_usd(self) -> float | None:
        """The known sum; None when some calls spent at an unknown price and none at a known one."""
        if self.unknown_calls and not self.priced_calls:
            return None
        return self.known_usd

    @property
    def cost_text(self) -> str:
        """`$0.12`, `unknown`, or `$0.12 + unknown`: never 0 for an unknown price; then
        ` + ~$0.01 estimated` for calls that never settled."""
        text = "unknown" if self.cost_usd is None else usd(self.known_usd)
        if self.cost_usd is not None and self.unknown_calls:
            text += " + unknown"
        if self.estimated_priced:
            text += f" + ~{usd(self.estimated_usd)} estimated"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "calls": self.calls,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "cost_usd": self.cost_usd,
            "unknown_price_calls": self.unknown_calls,
            "estimated_calls": self.estimated_calls,
            "estimated_usd": self.estimated_usd,
            "cost": self.cost_text,
        }


def aggregate(rows: Iterable[CallRow], by: GroupBy | None) -> list[CostGroup]:
    """One group per key, without `by` one total group.

    Groups come in the order of their first call (phases in route order, providers in chain
    order), except days and tickets, which come in date and number order.
    """
    groups: dict[str, CostGroup] = {}
    for row in rows:
        key = row.key(by)
        groups.setdefault(key, CostGroup(key)).add(row)
    return ordered(list(groups.values()), by)


def ordered(groups: list[CostGroup], by: GroupBy | None) -> list[CostGroup]:
    """Groups in the order of their first call; days and tickets in their own order."""
    if by == "ticket":  # the calls of other owners last
        return sorted(
            groups, key=lambda g: (g.key == NO_TICKET, 0 if g.key == NO_TICKET else int(g.key[1:]))
        )
    if by == "day":
        return sorted(groups, key=lambda g: g.key)
    return groups


def total(groups: Iterable[CostGroup]) -> CostGroup:
    whole = CostGroup(TOTAL)
    for group in groups:
        whole.calls += group.calls
        whole.errors += group.errors
        whole.fallbacks += group.fallbacks
        whole.input_tokens += group.input_tokens
        whole.output_tokens += group.output_tokens
        whole.cached_tokens += group.cached_tokens
        whole.known_usd += group.known_usd
        whole.priced_calls += group.priced_calls
        whole.unknown_calls += group.unknown_calls
        whole.estimated_calls += group.estimated_calls
        whole.estimated_priced += group.estimated_priced
        whole.estimated_usd += group.estimated_usd
    return whole


@dataclass(frozen=True)
class CostReport:
    by: GroupBy | None
    ticket_id: int | None
    groups: list[CostGroup]
    total: CostGroup

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "ticket": self.ticket_id,
            "groups": [g.as_dict() for g in self.groups],
            "total": self.total.as_dict(),
        }


def _key(session: Session, by: GroupBy | None) -> KeyedColumnElement[Any] | None:
    """The column `by` groups on (None: one group)."""
    c = m.Call
    if by is None:
        return None
    if by == "day":  # UTC: SQLite keeps the UTC time without a zone, PostgreSQL with one
        if session.get_bind().dialect.name == "postgresql":
            return func.date(func.timezone("UTC", c.created_at)).label("key")
        return func.date(c.created_at).label("key")
    column: KeyedColumnElement[Any] = getattr(c, "ticket_id" if by == "ticket" else by)
    return column.label("key")


def _key_text(value: Any, by: GroupBy | None) -> str:
    if by is None:
        return TOTAL
    if by == "ticket":
        return NO_TICKET if value is None else f"#{value}"
    return str(value or "") or "-"


def grouped(session: Session, by: GroupBy | None, *where: ColumnElement[bool]) -> list[CostGroup]:
    """`aggregate` over the calls matching `where`, summed by the store in one GROUP BY."""
    c = m.Call
    key = _key(session, by)
    query = select(
        func.count(),
        func.count(c.error),
        func.count().filter(c.fallback.is_(True)),
        func.coalesce(func.sum(c.input_tokens), 0),
        func.coalesce(func.sum(c.output_tokens), 0),
        func.coalesce(func.sum(c.cached_tokens), 0),
        # an unknown price has no cost: known ones only, settled calls apart from estimates
        func.coalesce(func.sum(c.cost).filter(~c.estimated), 0.0),
        func.count(c.cost).filter(~c.estimated),
        func.count().filter(unknown_price()),
        func.count().filter(c.estimated),
        func.count(c.cost).filter(c.estimated, ~unknown_price()),
        func.coalesce(func.sum(c.cost).filter(c.estimated), 0.0),
        *([] if key is None else [key]),
    ).where(*where)
    if key is not None:
        query = query.group_by(key).order_by(func.min(c.id))
    groups = []
    for row in session.execute(query):
        if not row[0]:  # no calls at all (the one row of an ungrouped sum)
            continue
        groups.append(
            CostGroup(
                _key_text(row[12] if key is not None else None, by),
                calls=row[0],
                errors=row[1],
                fallbacks=row[2],
                input_tokens=int(row[3]),
                output_tokens=int(row[4]),
                cached_tokens=int(row[5]),
                known_usd=float(row[6] or 0.0),
                priced_calls=row[7],
                unknown_calls=row[8],
                estimated_calls=row[9],
                estimated_priced=row[10],
                estimated_usd=float(row[11] or 0.0),
            )
        )
    return ordered(groups, by)


def bill(session: Session, *where: ColumnElement[bool]) -> CostGroup:
    """Calls, tokens and cost of the calls matching `where`, as one group."""
    groups = grouped(session, None, *where)
    return groups[0] if groups else CostGroup(TOTAL)


def bills(session: Session, *where: ColumnElement[bool]) -> dict[int, CostGroup]:
    """The bill of each ticket with calls matching `where`, by ticket id, in one query."""
    groups = grouped(session, "ticket", m.Call.ticket_id.is_not(None), *where)
    return {int(g.key[1:]): g for g in groups}


def cost_report(
    store: Store, *, ticket_id: int | None = None, by: GroupBy | None = None
) -> CostReport:
    """The bill from the calls table, for one ticket or all, grouped `by` (None: the total)."""
    if by is not None and by not in GROUP_BY:
        raise ValueError(f"by must be one of {', '.join(GROUP_BY)} (got {by!r})")
    with store.session() as session:
        where = []
        if ticket_id is not None:
            if session.get(m.Ticket, ticket_id) is None:
                raise TicketError(f"no ticket #{ticket_id}")
            where.append(m.Call.ticket_id == ticket_id)
        groups = grouped(session, by, *where)
    return CostReport(by, ticket_id, groups, total(groups))


@dataclass(frozen=True)
class Spend:
    """Known dollars spent, how many calls spent tokens at an unknown price, and the estimated
    dollars of the calls that never settled."""

    known_usd: float
    unknown_calls: int
    estimated_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return self.known_usd + self.estimated_usd


def spend(session: Session, *where: ColumnElement[bool]) -> Spend:
    """What the calls matching `where` cost, summed in the store (no rows loaded)."""
    row = session.execute(
        select(
            func.coalesce(func.sum(m.Call.cost).filter(~m.Call.estimated), 0.0),
            func.count().filter(unknown_price()),
            func.coalesce(func.sum(m.Call.cost).filter(m.Call.estimated), 0.0),
        ).where(*where)
    ).one()
    return Spend(float(row[0] or 0.0), int(row[1]), float(row[2] or 0.0))
