"""Build a phase's prompt from its template and declared inputs, within its token budget.

The repository context a phase declares (shipline.context) fills the room the rest of the
prompt leaves, up to `context_tokens` ([context] share of the budget): it never pushes a
deliverable out, and it is cut by its own rules (whole files, outlines, visible `[cut: …]`
notes). Its record (what was shown, what was cut) goes on the attempt.

Truncation is documented (docs/phases.md) and recorded on the attempt. When the prompt
without repository context is over `input_token_budget`, it gets none, and:
  1. each input is cut down to its headings and ID lines (R1…, D1…, table header rows);
  2. then the oldest attempts' objections are dropped, newest kept, one attempt at a time;
  3. if it is still over, BudgetExceeded: the ticket goes to a human with the figures.
The middle of a document is never silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jinja2

from shipline.errors import BudgetExceeded
from shipline.phases.base import PhaseSpec
from shipline.providers.base import Message, estimate_tokens

if TYPE_CHECKING:
    from shipline.context.fit import Candidates

_KEEP_LINE = re.compile(r"^\s*(#{1,6}\s|[-*]?\s*\**\s*[RD]\d+\b|\|)")


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("shipline.phases", "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_blocks(template_name: str, variables: Mapping[str, Any]) -> tuple[str, str]:
    """Render a template's `system` and `user` blocks separately."""
    template = environment().get_template(template_name)
    context = template.new_context(dict(variables))
    system = "".join(template.blocks["system"](context)).strip()
    user = "".join(template.blocks["user"](context)).strip()
    return system, user


def outline(text: str) -> str:
    """An input cut down to its skeleton: headings, requirement/component lines, table rows."""
    kept = [line for line in text.splitlines() if _KEEP_LINE.match(line)]
    return "\n".join(kept) + "\n[… cut to its outline to fit the token budget …]"


@dataclass(frozen=True)
class Prompt:
    messages: tuple[Message, ...]
    tokens: int
    truncated: bool
    context: dict[str, Any] | None = None  # the repository context's record; None: none declared


def build_prompt(
    phase: PhaseSpec,
    variables: dict[str, Any],
    budget: int,
    repository: Callable[[], Candidates] | None = None,
    context_tokens: int = 0,
) -> Prompt:
    """Render the phase prompt with the repository context that fits (`repository` gathers
    its candidates, only when there is room); truncate as documented above if it is over
    `budget`."""

    def render(vars_: dict[str, Any]) -> tuple[tuple[Message, ...], int]:
        system, user = render_blocks(phase.template, vars_)
        messages = (Message("system", system), Message("user", user))
        return messages, estimate_tokens(system) + estimate_tokens(user)

    variables = {**variables, "repo": ""}
    messages, tokens = render(variables)
    record: dict[str, Any] | None = None
    if repository is not None:
        from shipline.context.fit import MIN_ROOM, empty, fit  # only on the engine's path

        # the section adds a blank line, and each rendered block may round up one token more
        room = min(context_tokens, budget - tokens - 2)
        if context_tokens <= 0:
            record = empty("turned off ([context] share or context_tokens is 0)").record
        elif room < MIN_ROOM:
            record = empty("no room left in the token budget").record
        else:
            candidates = repository()
            for _ in range(3):  # an estimate that rounds the other way: fit a little less
                fitted = fit(candidates, room, estimate_tokens)
                record = fitted.record
                if not fitted.text:
                    break
                with_repo = {**variables, "repo": fitted.text}
                more_messages, more_tokens = render(with_repo)
                if more_tokens <= budget:
                    messages, tokens, variables = more_messages, more_tokens, with_repo
                    break
                room -= more_tokens - budget
            else:
                record = empty("no room left in the token budget", candidates).record
    if tokens <= budget:
        return Prompt(messages, tokens, truncated=False, context=record)
    first = tokens
    trimmed = dict(variables)
    trimmed["inputs"] = {name: outline(text) for name, text in variables["inputs"].items()}
    messages, tokens = render(trimmed)
    history = list(variables["history"])
    while tokens > budget and history:
        history.pop(0)
        trimmed["history"] = history
        messages, tokens = render(trimmed)
    if tokens > budget:
        raise BudgetExceeded(
            f"phase {phase.name}: the prompt needs about {first} tokens ({tokens} after "
            f"truncation) but [phases.{phase.name}] input_token_budget is {budget}"
        )
    return Prompt(messages, tokens, truncated=True, context=record)
