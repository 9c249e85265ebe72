"""Build the configured providers by kind. Vendor SDKs are imported only here, lazily: the
openai and anthropic modules import their optional SDKs at the top, so they are imported when
a provider of that kind is built (a missing SDK is then a ConfigError naming the extra)."""

from __future__ import annotations

from pathlib import Path

from shipline.config import ProviderSettings, Settings
from shipline.errors import ConfigError
from shipline.providers.base import Provider
from shipline.providers.guard import GuardPolicy
from shipline.providers.local import LocalProvider
from shipline.providers.router import Router
from shipline.providers.scripted import ScriptedProvider


def build_provider(name: str, settings: ProviderSettings, base_dir: Path) -> Provider:
    if settings.kind == "scripted":
        if not settings.script:
            raise ConfigError(f'[providers.{name}] kind = "scripted" needs script = "FILE"')
        path = Path(settings.script)
        prices = None
        if settings.price_input_per_mtok is not None or settings.price_output_per_mtok is not None:
            prices = (settings.price_input_per_mtok or 0.0, settings.price_output_per_mtok or 0.0)
        return ScriptedProvider.from_file(
            name, path if path.is_absolute() else base_dir / path, in_house=True, prices=prices
        )
    if settings.kind == "local":  # llama_cpp itself is imported when the model is loaded
        return LocalProvider(name, settings)
    if settings.kind == "openai":
        try:  # lazy: the openai SDK is an optional, heavy dependency
            from shipline.providers.openai_compat import OpenAICompatProvider
        except ImportError as exc:
            raise _missing_sdk(name, "openai", exc) from None
        return OpenAICompatProvider(name, settings)
    if settings.kind == "anthropic":
        try:  # lazy: the anthropic SDK is an optional, heavy dependency
            from shipline.providers.anthropic_provider import AnthropicProvider
        except ImportError as exc:
            raise _missing_sdk(name, "anthropic", exc) from None
        return AnthropicProvider(name, settings)
    raise ConfigError(f"[providers.{name}] kind = {settings.kind!r} is not available in this build")


def _missing_sdk(name: str, extra: str, exc: ImportError) -> ConfigError:
    return ConfigError(
        f"[providers.{name}] kind = {extra!r} needs the {exc.name or extra} package: "
        f"pip install 'shipline[{extra}]'"
    )


def build_router(settings: Settings, base_dir: Path) -> Router:
    """Providers are built on first use so that an unused local model is never loaded."""
    used = {name for chain in settings.tiers.values() for name in chain}
    providers = {n: build_provider(n, settings.providers[n], base_dir) for n in sorted(used)}
    policies = {n: GuardPolicy.from_settings(settings.providers[n]) for n in providers}
    return Router(providers, settings.tiers, policies=policies)
