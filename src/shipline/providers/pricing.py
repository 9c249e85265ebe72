"""What a call (or an external agent's run) cost, in USD: config overrides first, then the
genai-prices table, else unknown.

An unknown price is None, never 0. The embedded and scripted providers are ours and cost 0.
Token counts follow the OpenAI convention: `input_tokens` includes `cached_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from shipline.config import ProviderSettings

FREE_KINDS = frozenset({"local", "scripted"})
_DEFAULT_PROVIDER_ID = {"openai": "openai", "anthropic": "anthropic"}
_DEFAULT_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}


@dataclass(frozen=True)
class Price:
    """USD for the input side (cached tokens included) and the output side of one call."""

    input_usd: float
    output_usd: float

    @property
    def total_usd(self) -> float:
        return self.input_usd + self.output_usd


def table_price(
    model: str,
    *,
    kind: str,
    base_url: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
) -> Price | None:
    """The list price from genai-prices, or None when the model or the server is not listed.

    The server is told by `base_url` (api.groq.com, openrouter.ai, ...); without one, the
    vendor of `kind` is meant. A loopback or in-house URL is never priced as a hosted API.
    """
    try:  # an optional dependency (the openai/anthropic extras): imported only when pricing
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    if not model:
        return None
    usage = Usage(
        input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached_tokens
    )
    host = urlparse(base_url).hostname or ""
    try:
        if not base_url or host == _DEFAULT_HOSTS.get(kind):
            provider_id = _DEFAULT_PROVIDER_ID.get(kind)
            if provider_id is None:
                return None
            result = calc_price(usage, model, provider_id=provider_id)
        else:
            result = calc_price(usage, model, provider_api_url=base_url)
    except LookupError:
        return None
    return Price(float(result.input_price), float(result.output_price))


def price_usd(
    model: str,
    *,
    kind: str,
    base_url: str = "",
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    input_per_mtok: float | None = None,
    output_per_mtok: float | None = None,
) -> float | None:
    """USD of one call or one agent run: each side at its configured price (USD per million
    tokens) when one is set, else at the table's (`table_price`); None when a side has neither.

    The one place where tokens become money: providers' calls (`call_cost`) and external
    agents' runs (`sessions.external.agent_cost`) are both priced here.
    """
    input_usd = input_tokens * input_per_mtok / 1e6 if input_per_mtok is not None else None
    output_usd = output_tokens * output_per_mtok / 1e6 if output_per_mtok is not None else None
    if input_usd is None or output_usd is None:
        table = table_price(
            model,
            kind=kind,
            base_url=base_url,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached_tokens,
        )
        if table is None:
            return None
        input_usd = table.input_usd if input_usd is None else input_usd
        output_usd = table.output_usd if output_usd is None else output_usd
    return input_usd + output_usd


def call_cost(
    settings: ProviderSettings,
    model: str,
    *,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
) -> float | None:
    """USD for one call of a provider: 0 for ours (local, scripted), else `price_usd` with the
    entry's price overrides, the model it answered with (else its configured one) and its URL."""
    if settings.kind in FREE_KINDS:
        return 0.0
    return price_usd(
        model or settings.model,
        kind=settings.kind,
        base_url=settings.base_url,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        input_per_mtok=settings.price_input_per_mtok,
        output_per_mtok=settings.price_output_per_mtok,
    )
