"""Tiers to providers: pick the chain for a tier, try each entry in order, report which answered.

The engine calls `Router.complete(tier, request, sensitive=...)` and never names a vendor.
Each provider sits behind a `Guard` (guard.py) that owns retries, cooldown and rate limits;
the router only walks the chain and records every call that went out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shipline.errors import ConfigError, ProviderError
from shipline.providers.base import Completion, CompletionRequest, Provider
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


@dataclass(frozen=True)
class RoutedCompletion:
    completion: Completion
    provider: str
    tier: str
    fallback: bool


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
        if tier not in self._tiers:
            known = ", ".join(sorted(self._tiers))
            raise ConfigError(f"shipline.toml [tiers] has no tier {tier!r} (known: {known})")
        chain = [self._providers[name] for name in self._tiers[tier]]
        if sensitive:
            chain = [p for p in chain if p.in_house]
            if not chain:
                raise ConfigError(
                    f"tier {tier!r} has no provider with in_house = true, and this ticket is "
                    "sensitive: add an in-house provider to the tier"
                )
        return chain

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
    ) -> RoutedCompletion:
        """Try each provider of the tier in order. Every call that went out is passed to `record`.

        A provider that is cooling down is skipped without a call. Raises `ConfigError` before
        any call when the tier cannot serve the request, and `ProviderError` naming every
        entry's reason when all of them failed.
        """
        chain = self.chain(tier, sensitive=sensitive)
        reasons: list[str] = []
        retryable = False
        for index, provider in enumerate(chain):
            fallback = index > 0
            on_try = _recorder(record, tier, fallback, getattr(provider, "model", ""))
            try:
                completion = self._guards[provider.name].complete(request, on_try)
            except ProviderCooling as exc:
                reasons.append(f"{provider.name}: skipped, {exc}")
                retryable = True
                continue
            except ProviderError as exc:
                reasons.append(f"{provider.name}: {exc}")
                retryable = retryable or exc.retryable
                continue
            return RoutedCompletion(completion, provider.name, tier, fallback)
        raise ProviderError(
            f"every provider of tier {tier!r} failed: " + "; ".join(reasons), retryable=retryable
        )


def _recorder(
    record: Callable[[CallRecord], None] | None, tier: str, fallback: bool, model: str
) -> Callable[[Try], None] | None:
    if record is None:
        return None

    def on_try(t: Try) -> None:
        done = t.completion or getattr(t.error, "usage", None)
        record(
            CallRecord(
                provider=t.provider,
                model=done.model if done else model,
                tier=tier,
                input_tokens=done.input_tokens if done else 0,
                output_tokens=done.output_tokens if done else 0,
                cached_tokens=done.cached_tokens if done else 0,
                latency_ms=t.latency_ms,
                cost=done.cost if done else 0.0,
                fallback=fallback,
                error=None if t.error is None else str(t.error),
            )
        )

    return on_try
