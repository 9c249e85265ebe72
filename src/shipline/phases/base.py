"""What a phase is: one responsibility, one deliverable, declared inputs, deterministic checks.

A phase module defines a `PHASE = PhaseSpec(...)`. The engine renders its Jinja template
with only the declared inputs and the repository context it declares, asks the producer for
the deliverable, then runs `check` (free, deterministic) before any validator model is asked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

# check(deliverable_text, inputs) -> objections. `inputs` maps deliverable file names
# (e.g. "spec.md") to their text, for the declared inputs that exist on this ticket's route.
Check = Callable[[str, Mapping[str, str]], list[str]]

# What a phase sees of the repository, besides its declared inputs (docs/phases.md,
# "Repository context"; built by shipline.context within the phase's token budget):
#   none     nothing;
#   map      the repository map: files and their top-level symbols, ranked by relevance to
#            the ticket and the deliverables so far;
#   named    the map, and the files the ticket names (a stack trace, a path), whole;
#   planned  the map, and the current content of the files the plan (or the diagnosis, the CI
#            log) names, with the existing tests near them.
RepoContext = Literal["none", "map", "named", "planned"]


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    deliverable: str  # file name, e.g. "spec.md"
    inputs: tuple[str, ...]  # deliverable file names this phase may read, in prompt order
    purpose: str  # one line, shown in docs and in the validator prompt
    check: Check
    template: str  # Jinja template file name in shipline/phases/templates/
    output: Literal["markdown", "json"] = "markdown"
    context: RepoContext = "none"
