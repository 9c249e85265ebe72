"""Routes are data: ticket kind (and optionally lane) → the ordered phases it runs.

`[routes]` in shipline.toml maps a kind to its phases; a key `"KIND.laneN"` overrides the
route for that lane only (e.g. `"feature.lane1" = ["plan", "tests", "implement", "review"]`).
"""

from __future__ import annotations

import re

from shipline.config import Settings
from shipline.errors import ConfigError, TicketError

KINDS = ("feature", "hotfix", "epic")
SESSION_PHASES = ("tests", "implement", "fix-ci")  # the phases that change code
_KEY = re.compile(r"^(?P<kind>[a-z][a-z0-9_-]*)(?:\.lane(?P<lane>[1-3]))?$")


def validate_routes(settings: Settings, source: str) -> None:
    """Every route names known phases, once each; `split` may only end a route."""
    from shipline.phases import PHASES

    for key, phases in settings.routes.items():
        where = f"{source} [routes] {key}"
        if not _KEY.match(key):
            raise ConfigError(f"{where}: keys are KIND or KIND.laneN (N = 1, 2 or 3)")
        if not phases:
            raise ConfigError(f"{where} is empty: list at least one phase")
        seen: set[str] = set()
        for phase in phases:
            if phase not in PHASES:
                known = ", ".join(sorted(PHASES))
                raise ConfigError(f"{where} names unknown phase {phase!r} (known: {known})")
            if phase == "fix-ci":
                raise ConfigError(
                    f"{where} lists 'fix-ci': it is not routed, the engine starts it when CI "
                    "is red after implement or a merge fails (set [phases.fix-ci] instead)"
                )
            if phase in seen:
                raise ConfigError(
                    f"{where} has a cycle: {phase!r} appears twice; a route runs each phase once"
                )
            seen.add(phase)
        if "split" in phases and phases[-1] != "split":
            raise ConfigError(f"{where}: 'split' must be the last phase of a route")
    kinds = {m.group("kind") for key in settings.routes if (m := _KEY.match(key))}
    for kind in sorted(kinds | set(KINDS)):
        if kind not in settings.routes:
            raise ConfigError(
                f"{source} [routes] has no route for kind {kind!r}: a lane route "
                f"({kind}.laneN) overrides a kind's route, it does not replace it"
            )
    for name in settings.phases:
        if name not in PHASES:
            known = ", ".join(sorted(PHASES))
            raise ConfigError(f"{source} [phases.{name}] is not a phase (known: {known})")
    for name, phase_settings in settings.phases.items():
        session = phase_settings.session
        if not session:
            continue
        if name not in SESSION_PHASES:
            raise ConfigError(
                f"{source} [phases.{name}] session = {session!r}: only the code phases "
                f"({', '.join(SESSION_PHASES)}) run coding sessions"
            )
        if not settings.judge.command.strip():
            raise ConfigError(
                f"{source} [phases.{name}] session = {session!r} needs [judge] command: a "
                "session works in the ticket's worktree, which only exists with a judge"
            )
        if session != "builtin" and session not in settings.agents:
            known = ", ".join(["builtin", *sorted(settings.agents)])
            raise ConfigError(
                f"{source} [phases.{name}] session = {session!r} is neither 'builtin' nor an "
                f"[agents.{session}] entry (known: {known})"
            )
    routed = {phase for phases in settings.routes.values() for phase in phases}
    for name in sorted(routed | set(settings.phases)):
        for key, tier in (
            ("tier", settings.tier_for(name)),
            ("validator_tier", settings.phase(name).validator_tier),
        ):
            if tier not in settings.tiers:
                raise ConfigError(
                    f"{source} [phases.{name}] {key} is {tier!r}, which is not a tier in "
                    f"[tiers] (known: {', '.join(sorted(settings.tiers))}): add the tier or "
                    f"set [phases.{name}] {key}"
                )


def route_for(settings: Settings, kind: str, lane: int) -> list[str]:
    """The phases a ticket of this kind and lane runs (pure)."""
    kinds = sorted({m.group("kind") for key in settings.routes if (m := _KEY.match(key))})
    if kind not in kinds:
        raise TicketError(f"unknown ticket kind {kind!r} (known: {', '.join(kinds)})")
    return list(settings.routes.get(f"{kind}.lane{lane}") or settings.routes[kind])
