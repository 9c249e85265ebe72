"""What a phase is: one responsibility, one deliverable, declared inputs, deterministic checks.

A phase module defines a `PHASE = PhaseSpec(...)`. The engine renders its Jinja template
with only the declared inputs, asks the producer for the deliverable, then runs `check`
(free, deterministic) before any validator model is asked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

# check(deliverable_text, inputs) -> objections. `inputs` maps deliverable file names
# (e.g. "spec.md") to their text, for the declared inputs that exist on this ticket's route.
Check = Callable[[str, Mapping[str, str]], list[str]]


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    deliverable: str  # file name, e.g. "spec.md"
    inputs: tuple[str, ...]  # deliverable file names this phase may read, in prompt order
    purpose: str  # one line, shown in docs and in the validator prompt
    check: Check
    template: str  # Jinja template file name in shipline/phases/templates/
    output: Literal["markdown", "json"] = "markdown"
