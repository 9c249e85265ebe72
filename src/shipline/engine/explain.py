"""`shipline route explain`: for each phase of a ticket, which provider would answer, and why.

Each phase has two roles: the producer runs on the phase's tier (`settings.tier_for`), the
validator on its `validator_tier` (unless `validator = false`). For each role the router
reports every entry of the tier (`Router.explain`: ready, cooling down, or excluded because
the ticket is sensitive and the entry is not in-house), and `choose` picks the entry the
router would call first. A sensitive ticket whose tier has no in-house entry is *blocked*:
the engine refuses it before any call and hands the ticket to a human.

The result is a pydantic view (`RouteExplanation`): `shipline route explain --json` prints
its JSON, and `shipline.api` hands it to every front-end.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, computed_field

from shipline.engine.project import Project
from shipline.engine.tickets import get_ticket
from shipline.errors import ConfigError
from shipline.providers.base import Role
from shipline.providers.router import EntryStatus, Router

BLOCKED_SUFFIX = "; the engine refuses this before any call and hands the ticket to a human"


class RoleRoute(BaseModel):
    """Where one role of one phase goes: the tier, its entries, the one used first, and why."""

    model_config = ConfigDict(frozen=True)

    role: Role
    tier: str
    entries: list[EntryStatus]
    chosen: str | None  # the provider called first; None: blocked, or nothing ready now
    model: str | None
    reason: str
    fallbacks: list[str] = []  # ready entries after `chosen`, in order
    blocked: bool = False


class PhaseRoute(BaseModel):
    model_config = ConfigDict(frozen=True)

    phase: str
    status: str  # the step's status (pending, passed, …)
    producer: RoleRoute
    validator: RoleRoute | None  # None: `validator = false` for this phase


class RouteExplanation(BaseModel):
    model_config = ConfigDict(frozen=True)

    ticket_id: int
    kind: str
    lane: int
    sensitive: bool
    status: str
    phases: list[PhaseRoute]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def runnable(self) -> bool:
        """False when some role of some phase is blocked (sensitive, no in-house entry)."""
        return not any(
            role.blocked
            for phase in self.phases
            for role in (phase.producer, phase.validator)
            if role is not None
        )


def choose(role: Role, tier: str, entries: list[EntryStatus]) -> RoleRoute:
    """The first ready entry of the chain is called first; later ready ones are its fallbacks.

    Pure: `entries` is what `Router.explain(tier, sensitive=…)` reports, in chain order.
    """
    ready = [e for e in entries if e.status == "ready"]
    if not ready:
        skipped = ", ".join(f"{e.provider} {e.status} ({e.reason})" for e in entries)
        reason = f"no entry of tier {tier!r} can take a call now: {skipped}"
        return RoleRoute(
            role=role, tier=tier, entries=entries, chosen=None, model=None, reason=reason
        )
    first = ready[0]
    index = entries.index(first)
    if index == 0:
        reason = f"first entry of tier {tier!r}"
    else:
        passed = ", ".join(f"{e.provider} {e.status} ({e.reason})" for e in entries[:index])
        reason = f"entry {index + 1} of tier {tier!r}: {passed}"
    if first.reason:
        reason += f"; {first.reason}"
    return RoleRoute(
        role=role,
        tier=tier,
        entries=entries,
        chosen=first.provider,
        model=first.model,
        reason=reason,
        fallbacks=[e.provider for e in ready[1:]],
    )


def explain_role(router: Router, role: Role, tier: str, *, sensitive: bool) -> RoleRoute:
    try:
        entries = router.explain(tier, sensitive=sensitive)
    except ConfigError as exc:
        return RoleRoute(
            role=role,
            tier=tier,
            entries=[],
            chosen=None,
            model=None,
            reason=f"{exc}{BLOCKED_SUFFIX}",
            blocked=True,
        )
    return choose(role, tier, entries)


def explain_ticket(project: Project, ticket_id: int) -> RouteExplanation:
    """Explain every phase of the ticket's route against the project's settings and router.

    Reads the store and config only: no provider is called. Raises `TicketError` for an
    unknown ticket, and `ConfigError` when a provider of the config cannot be built (a key
    variable that is not set), exactly as `shipline run` would.
    """
    settings = project.settings
    with project.store.session() as session:
        ticket = get_ticket(session, ticket_id)
        steps = [(s.phase, s.status) for s in ticket.steps]
        kind, lane, sensitive, status_now = (
            ticket.kind,
            ticket.lane,
            ticket.sensitive,
            ticket.status,
        )
    in_house_only = settings.in_house_only(sensitive, lane)
    router = project.router
    phases = []
    for phase, status in steps:
        conf = settings.phase(phase)
        producer = explain_role(
            router, "producer", settings.tier_for(phase), sensitive=in_house_only
        )
        validator = (
            explain_role(router, "validator", conf.validator_tier, sensitive=in_house_only)
            if conf.validator
            else None
        )
        phases.append(
            PhaseRoute(phase=phase, status=status, producer=producer, validator=validator)
        )
    return RouteExplanation(
        ticket_id=ticket_id,
        kind=kind,
        lane=lane,
        sensitive=sensitive,
        status=status_now,
        phases=phases,
    )
