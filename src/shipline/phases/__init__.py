"""The phase registry: every phase by name, and the validator's verdict (model and schema).

A phase module (discovery.py, techspec.py, …) defines `PHASE`; its prompt template lives in
`templates/`, next to `_base.md.j2` (shared macros) and `validator.md.j2`.
"""

from __future__ import annotations

from shipline.errors import ShiplineError

from . import (
    diagnose,
    discovery,
    fix_ci,
    implement,
    plan,
    review,
    split,
    techspec,
    tests_phase,
)
from .base import Check, PhaseSpec
from .verdict import VERDICT_SCHEMA, Verdict

PHASES: dict[str, PhaseSpec] = {
    module.PHASE.name: module.PHASE
    for module in (
        discovery,
        techspec,
        plan,
        diagnose,
        tests_phase,
        implement,
        fix_ci,
        review,
        split,
    )
}

# The validator's prompt template: blocks `system` and `user`; variables phase, ticket,
# deliverable (file name), text (the deliverable) and inputs.
VALIDATOR_TEMPLATE = "validator.md.j2"


class UnknownPhase(ShiplineError, KeyError):
    """A phase name that is not in the registry (a mapping's KeyError too, for lookups)."""

    def __str__(self) -> str:  # the message as written, not quoted the way KeyError's is
        return str(self.args[0]) if self.args else ""


def get_phase(name: str) -> PhaseSpec:
    """The phase called `name`; UnknownPhase naming the known phases when there is none."""
    try:
        return PHASES[name]
    except KeyError:
        known = ", ".join(PHASES)
        raise UnknownPhase(f"unknown phase {name!r} (known phases: {known})") from None


__all__ = [
    "PHASES",
    "VALIDATOR_TEMPLATE",
    "VERDICT_SCHEMA",
    "Check",
    "PhaseSpec",
    "UnknownPhase",
    "Verdict",
    "get_phase",
]
