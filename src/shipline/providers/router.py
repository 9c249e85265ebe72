"""Tiers to providers: pick the chain for a tier, try each entry in order, report which answered.

The engine calls `Router.complete(tier, request, sensitive=...)` and never names a vendor.
Each provider sits behind a `Guard` (guard.py) that owns retries, cooldown and rate limits;
the router only walks the chain and records every call that went out: `started` hears of
each call right before it is sent (an estimate: its input tokens counted from the prompt,
priced at the provider's input price), `record` once it answered or failed (what it really
used), both with the same `CallRecord.key`. `Router.bind(tier, …)`
gives the router as a `Provider` (a fallback chain that is itself a model), for code that takes
any provider, such as the built-in agent loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from shipline.errors import ConfigError, ProviderError
from shipline.providers.base import (
    Completion,
    CompletionRequest,
    Message,
    Priced,
    Provider,
    estimate_input_tokens,
)
from shipline.providers.guard import Clock, Guard, GuardPolicy, ProviderCooling, Try


@dataclass(frozen=True)
class CallRecord:
    """One provider call as the store keeps it (successful or not)."""

    provider: str
    model: str
    tier: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    latency_ms: float
    cost: float | None
    fallback: bool
    error: str | None
    # What was sent and what came back (None: the call failed), for `call_payloads`.
    messages: tuple[Message, ...] = ()
    response: str | None = None
    # One call's started record (an estimate, before it is sent) and its settled record (after)
    # share a key, unique in this process.
    key: int = 0
    estimated: bool = False


@dataclass(frozen=True)
class RoutedCompletion:
    completion: Completion
    provider: str
    tier: str
    fallback: bool


@dataclass(frozen=True)
class EntryStatus:
    """One entry of a tier as `shipline route explain` shows it."""

    provider: str
    model: str
    in_house: bool
    status: Literal["ready", "cooling", "excluded"]
    reason: str


class Router:
    """Walks a tier's chain; each entry is a guarded provider.

    `policies` maps provider names to their `GuardPolicy` (default: one try, no limits).
    `clock` and `jitter` are injectable so tests of backoff and cooldown run instantly.
    """

    def __init__(
        self,
        providers: Mapping[str, Provider],
        tiers: Mapping[str, list[str]],
        *,
        policies: Mapping[str, GuardPolicy] | None = None,
        clock: Clock | None = None,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        self._providers = dict(providers)
        self._tiers = {k: list(v) for k, v in tiers.items()}
        policies = policies or {}
        self._guards = {
            name: Guard(provider, policies.get(name), clock=clock, jitter=jitter)
            for name, provider in self._providers.items()
        }

    def chain(self, tier: str, *, sensitive: bool = False) -> list[Provider]:
        """The ordered providers for `tier`; for sensitive work, only in-house ones."""
        return [provider for _, provider in self._entries(tier, sensitive)]

    def _entries(self, tier: str, sensitive: bool) -> list[tuple[str, Provider]]:
        if tier not in self._tiers:
            known = ", ".join(sorted(self._tiers))
            raise ConfigError(f"shipline.toml [tiers] has no tier {tier!r} (known: {known})")
        entries = [(name, self._providers[name]) for name in self._tiers[tier]]
        if sensitive:
            entries = [(name, p) for name, p in entries if p.in_house]
            if not entries:
                raise ConfigError(
                    f"tier {tier!r} has no provider with in_house = true, and this ticket is "
                    "sensitive: add an in-house provider to the tier"
                )
        return entries

    def explain(self, tier: str, *, sensitive: bool = False) -> list[EntryStatus]:
        """Each entry of `tier` and what the router would do with it now, and why.

        Raises `ConfigError` like `complete` would (unknown tier, sensitive with no in-house).
        """
        allowed = {name for name, _ in self._entries(tier, sensitive)}
        statuses: list[EntryStatus] = []
        for name in self._tiers[tier]:
            provider = self._providers[name]
            breaker = self._guards[name].breaker
            status: Literal["ready", "cooling", "excluded"] = "ready"
            reason = "half-open: one trial call" if breaker.state == "half-open" else ""
            if name not in allowed:
                status, reason = "excluded", "sensitive work: not in_house"
            elif breaker.state == "open":
                status = "cooling"
                reason = (
                    f"{breaker.consecutive_failures} consecutive failures, "
                    f"{breaker.remaining():.0f}s of cooldown left"
                )
            model = str(getattr(provider, "model", ""))
            statuses.append(EntryStatus(name, model, provider.in_house, status, reason))
        return statuses

    def bind(
        self,
        tier: str,
        *,
        sensitive: bool = False,
        record: Callable[[CallRecord], None] | None = None,
        before_call: Callable[[], None] | None = None,
        after_call: Callable[[], None] | None = None,
        started: Callable[[CallRecord], None] | None = None,
    ) -> RoutedProvider:
        """This router as a `Provider` bound to one tier and one piece of work's policy: see
        `RoutedProvider`."""
        return RoutedProvider(
            self,
            tier,
            sensitive=sensitive,
            record=record,
            before_call=before_call,
            after_call=after_call,
            started=started,
        )

    def guard(self, provider: str) -> Guard:
        """The guard of one provider (its breaker state shows whether it is cooling down)."""
        return self._guards[provider]

    def complete(
        self,
        tier: str,
        request: CompletionRequest,
        *,
        sensitive: bool = False,
        record: Callable[[CallRecord], None] | None = None,
        started: Callable[[CallRecord], None] | None = None,
    ) -> RoutedCompletion:
        """Try each provider of the tier in order. Every call that went out is passed to `record`,
        and to `started` first, right before it is sent.

        A provider that is cooling down is skipped without a call. Raises `ConfigError` before
        any call when the tier cannot serve the request, and `ProviderError` naming every
        entry's reason when all of them failed.
        """
        entries = self._entries(tier, sensitive)
        reasons: list[str] = []
        retryable = False
        for index, (name, provider) in enumerate(entries):
            tries = _Tries(provider, tier, index > 0, request.messages, record, started)
            try:
                completion = self._guards[name].complete(request, tries.settled, tries.started)
            except ProviderCooling as exc:
                reasons.append(f"{name}: skipped, {exc}")
                retryable = True
                continue
            except ProviderError as exc:
                reasons.append(f"{name}: {exc}")
                retryable = retryable or exc.retryable
                continue
            return RoutedCompletion(completion, name, tier, index > 0)
        raise ProviderError(
            f"every provider of tier {tier!r} failed: " + "; ".join(reasons), retryable=retryable
        )


class RoutedProvider:
    """A router bound to a tier and a policy, as a `Provider` (like pydantic-ai's FallbackModel):
    each `complete` walks the tier's chain (in-house entries only when `sensitive`), passes every
    call that went out to `record`, and returns the completion that answered.

    `before_call` runs before each call and refuses it by raising (the engine's budget check);
    `after_call` runs after each answered call (the engine writes the recorded calls then);
    `started` hears of each call right before it is sent (see `Router.complete`).
    `in_house` is True when nothing it sends can leave the house: sensitive work, or a tier of
    in-house providers only.
    """

    name = "router"

    def __init__(
        self,
        router: Router,
        tier: str,
        *,
        sensitive: bool = False,
        record: Callable[[CallRecord], None] | None = None,
        before_call: Callable[[], None] | None = None,
        after_call: Callable[[], None] | None = None,
        started: Callable[[CallRecord], None] | None = None,
    ) -> None:
        self.router, self.tier, self.sensitive = router, tier, sensitive
        self.record, self.before_call, self.after_call = record, before_call, after_call
        self.started = started
        chain = router._tiers.get(tier, [])
        self.in_house = sensitive or all(router._providers[n].in_house for n in chain)

    def complete(self, request: CompletionRequest) -> Completion:
        if self.before_call is not None:
            self.before_call()
        routed = self.router.complete(
            self.tier, request, sensitive=self.sensitive, record=self.record, started=self.started
        )
        if self.after_call is not None:
            self.after_call()
        return routed.completion


_keys = itertools.count(1)  # CallRecord keys: next() is atomic under the GIL


class _Tries:
    """The records of one chain entry's tries: `started` before each goes out, `settled` after.

    The guard makes one try at a time, so the key of the try in flight is all it keeps.
    """

    def __init__(
        self,
        provider: Provider,
        tier: str,
        fallback: bool,
        messages: tuple[Message, ...],
        record: Callable[[CallRecord], None] | None,
        started: Callable[[CallRecord], None] | None,
    ) -> None:
        self.provider, self.tier, self.fallback, self.messages = provider, tier, fallback, messages
        self.model = str(getattr(provider, "model", ""))
        self.record, self.on_start = record, started
        self.key = 0

    def started(self, retry: int) -> None:
        self.key = next(_keys)
        if self.on_start is None:
            return
        tokens = estimate_input_tokens(self.messages)
        cost = self.provider.estimate_cost(tokens) if isinstance(self.provider, Priced) else None
        self.on_start(
            CallRecord(
                provider=self.provider.name,
                model=self.model,
                tier=self.tier,
                input_tokens=tokens,
                output_tokens=0,
                cached_tokens=0,
                latency_ms=0.0,
                cost=cost,
                fallback=self.fallback,
                error=None,
                messages=self.messages,
                key=self.key,
                estimated=True,
            )
        )

    def settled(self, t: Try) -> None:
        if self.record is None:
            return
        done = t.completion or getattr(t.error, "usage", None)
        self.record(
            CallRecord(
                provider=t.provider,
                model=done.model if done else self.model,
                tier=self.tier,
                input_tokens=done.input_tokens if done else 0,
                output_tokens=done.output_tokens if done else 0,
                cached_tokens=done.cached_tokens if done else 0,
                latency_ms=t.latency_ms,
                cost=done.cost if done else 0.0,
                fallback=self.fallback,
                error=None if t.error is None else str(t.error),
                messages=self.messages,
                response=t.completion.text if t.completion else None,
                key=self.key,
            )
        )
