"""The provider protocol: one completion request in, one completion out, with usage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["producer", "validator"]


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: str


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
    step: int = 0  # the model turn of a coding session (1, 2, …); 0 outside a session


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


@runtime_checkable
class Provider(Protocol):
    """A source of completions. Raise `shipline.errors.ProviderError` on failure."""

    name: str
    in_house: bool

    def complete(self, request: CompletionRequest) -> Completion: ...


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate (about 4 characters a token).

    Used for input budgets before a call, and by providers that do not count tokens.
    """
    return math.ceil(len(text) / 4) if text else 0
