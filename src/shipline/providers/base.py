"""The provider protocol: one completion request in, one completion out, with usage."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["producer", "validator"]


@dataclass(frozen=True)
class ToolCall:
    """One native tool call of a model. `error` is set when the provider could not read the
    call (arguments that are not a JSON object): the call is then answered, not run."""

    id: str
    name: str
    arguments: dict[str, Any]
    error: str = ""


@dataclass(frozen=True)
class Message:
    """One turn. Native tool calls ride along: an assistant turn's `tool_calls`, and the user
    turn holding a call's result names it in `tool_call_id`. Providers that take tools replay
    both in their API's shape; the others read them as text (`as_text`)."""

    role: Literal["system", "user", "assistant"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""


@dataclass(frozen=True)
class CompletionRequest:
    """What the engine asks of a provider.

    `phase`, `role`, `attempt` and `ticket_*` are context: providers that script their
    replies (the scripted provider) match on them; others ignore them.
    """

    messages: tuple[Message, ...]
    phase: str
    role: Role
    attempt: int
    ticket_kind: str = ""
    ticket_title: str = ""
    max_tokens: int = 1024
    temperature: float = 0.0
    json_schema: dict[str, Any] | None = None
    # How often a provider asks again, itself, for a reply that is not JSON fitting the schema
    # (then fails the call). None: the caller checks the reply and asks again, so the provider
    # calls once and returns the reply as it came (the engine: `[validator] parse_retries`).
    json_repairs: int | None = 2
    step: int = 0  # the model turn of a coding session (1, 2, …); 0 outside a session
    # Tools the model may call natively: {name, description, parameters (JSON schema)}.
    # Providers that support tool calls send them; the others ignore them.
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Completion:
    """A provider's answer. `cost` is None when the price is unknown (never guessed as 0)."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    cost: float | None = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    tool_calls: tuple[ToolCall, ...] = ()  # native tool calls, in the model's order


@runtime_checkable
class Provider(Protocol):
    """A source of completions. Raise `shipline.errors.ProviderError` on failure."""

    name: str
    in_house: bool

    def complete(self, request: CompletionRequest) -> Completion: ...


@runtime_checkable
class Priced(Protocol):
    """A provider that can price input before a call: what a call in flight is estimated to
    cost (the HTTP providers at their entry's price, ours at 0). Others' estimates are
    unknown."""

    def estimate_cost(self, input_tokens: int) -> float | None: ...


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate (about 4 characters a token).

    Used for input budgets before a call, and by providers that do not count tokens.
    """
    return math.ceil(len(text) / 4) if text else 0


def estimate_input_tokens(messages: Sequence[Message]) -> int:
    """`estimate_tokens` of a request's messages, their tool calls written out as text."""
    return sum(estimate_tokens(m.content) for m in as_text(messages))


def as_text(messages: Sequence[Message]) -> list[Message]:
    """`messages` for a provider that does not take native tool calls: each assistant tool call
    is written into its turn as a ```tool block (the agent loop's text protocol), and a tool's
    result is a plain user turn."""
    plain: list[Message] = []
    for m in messages:
        blocks = [
            "```tool\n" + json.dumps({"name": c.name, "args": c.arguments}) + "\n```"
            for c in m.tool_calls
        ]
        plain.append(Message(m.role, "\n".join(filter(None, [m.content, *blocks]))))
    return plain
