"""Shared by the HTTP providers (openai_compat, anthropic_provider): keys, errors, redaction,
and whether to send tools natively.

Keys come from the environment variable named by `api_key_env`, never from shipline.toml.
SDK exceptions become `ProviderCallError`s with `retryable`, `status` and `retry_after` set,
and every message is redacted before it can reach a record or a log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from shipline.config import ProviderSettings
from shipline.errors import ConfigError
from shipline.providers.base import Completion, CompletionRequest
from shipline.providers.guard import ProviderCallError, failure_from_status, parse_retry_after
from shipline.redact import MASK, redact

# Sent to keyless servers (Ollama, llama.cpp, vLLM on loopback): the SDKs need some key.
NO_KEY = "no-key"


def api_key_from_env(
    name: str, settings: ProviderSettings, environ: Mapping[str, str] | None = None
) -> str:
    """The key from `$api_key_env`. A provider without `base_url` is a hosted API and needs one."""
    env = os.environ if environ is None else environ
    var = settings.api_key_env
    if not var:
        if not settings.base_url:
            raise ConfigError(
                f'shipline.toml [providers.{name}] needs api_key_env = "VARIABLE" (the name '
                "of the environment variable holding the key), or base_url for a keyless server"
            )
        return NO_KEY
    key = env.get(var, "")
    if not key:
        raise ConfigError(
            f"shipline.toml [providers.{name}] api_key_env = {var!r}, but the environment "
            f"variable {var} is not set: export {var}=... before running shipline"
        )
    return key


class Redactor:
    """Masks this provider's own key (whatever its shape) and every known secret shape."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = tuple(s for s in secrets if s and s != NO_KEY and len(s) >= 4)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return redact(text)


def body_detail(body: Any, fallback: str) -> str:
    """The error message from an OpenAI- or Anthropic-shaped error body."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            message = inner.get("message")
            code = inner.get("code") or inner.get("type")
            if isinstance(message, str) and message:
                return f"{message} [{code}]" if isinstance(code, str) and code else message
    return fallback


def map_sdk_error(
    exc: Exception, sdk: Any, *, model: str, base_url: str, timeout_s: float, mask: Redactor
) -> ProviderCallError:
    """Turn an openai/anthropic SDK exception (both share one shape) into a classified error."""
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderCallError(f"timed out after {timeout_s:g}s at {base_url}", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc
        return ProviderCallError(
            f"cannot connect to {base_url}: {mask(str(cause) or type(cause).__name__)}",
            retryable=True,
        )
    if isinstance(exc, sdk.APIStatusError):
        headers = dict(exc.response.headers) if exc.response is not None else {}
        detail = mask(body_detail(exc.body, str(exc)))[:500]
        return failure_from_status(
            exc.status_code, detail, retry_after=parse_retry_after(headers), model=model
        )
    # A response that does not parse, or another SDK failure: the server misbehaved.
    detail = mask(str(exc))[:500]
    return ProviderCallError(f"bad response from {base_url}: {detail}", retryable=True)


class NativeTools:
    """Whether a provider sends a request's `tools` natively (`native_tools`, on by default).

    A server that refuses a request with tools (HTTP 400) and then takes the same request
    without them (its history as text) is asked without tools from then on, for the life of
    the process: the agent loop reads the text protocol instead.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def complete(
        self, request: CompletionRequest, send: Callable[[bool], Completion]
    ) -> Completion:
        """`send(native)` makes the call, with the tools (True) or with none (False)."""
        if not (request.tools and self.enabled):
            return send(False)
        try:
            return send(True)
        except ProviderCallError as exc:
            if exc.status != 400:
                raise
        completion = send(False)
        self.enabled = False  # the same request without tools went through
        return completion
