"""Shared by the HTTP providers (openai_compat, anthropic_provider): keys, errors, redaction,
reading a reply's body, and whether to send tools natively.

Keys come from the environment variable named by `api_key_env`, never from shipline.toml.
SDK exceptions become `ProviderCallError`s with `retryable`, `status` and `retry_after` set,
and every message is redacted before it can reach a record or a log.

A successful status says nothing about the body: a proxy's HTML error page, plain text, JSON
of another shape, a body cut short, one too big, or one that trickles past the timeout all
come with HTTP 200. The providers read the body themselves (`read_json_body`, at most
`MAX_BODY_BYTES`, within `timeout_s` of sending) and check its shape field by field (`Shape`),
so every such reply is a failed call that names what came back, never an exception of the SDK.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NoReturn

from shipline.config import ProviderSettings
from shipline.errors import ConfigError
from shipline.providers.base import Completion, CompletionRequest, ToolCall
from shipline.providers.guard import ProviderCallError, failure_from_status, parse_retry_after
from shipline.providers.pricing import call_cost
from shipline.redact import MASK, redact

# Sent to keyless servers (Ollama, llama.cpp, vLLM on loopback): the SDKs need some key.
NO_KEY = "no-key"
# The most of a reply's body that is read. A completion is a few kilobytes; a body past this
# is not a completion, and reading it on would only fill memory.
MAX_BODY_BYTES = 8 * 1024 * 1024
_SNIPPET = 120  # characters of a bad body quoted in the error
# The most tokens one count of a reply may say (far past any context window): a bigger one is
# no count, and a few of them added up still fit the store's 32-bit integer columns.
MAX_COUNT = 100_000_000
MAX_MODEL = 200  # characters of the model a reply names that are kept (the calls table's)


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


def exchange(
    open_response: Callable[[], AbstractContextManager[Any]],
    sdk: Any,
    sdk_error: type[Exception],
    *,
    model: str,
    base_url: str,
    timeout_s: float,
    mask: Redactor,
) -> Any:
    """Send one request (`open_response`: the SDK's `with_streaming_response` call) and return
    the JSON of its successful reply. Every failure is a `ProviderCallError`: the SDK's errors
    mapped (`map_sdk_error`), a bad body (`read_json_body`), and what the SDK lets through
    unwrapped (the connection breaking while it reads an error's body)."""
    sent_at = time.monotonic()
    try:
        with open_response() as response:
            return read_json_body(
                response, where=base_url, sent_at=sent_at, timeout_s=timeout_s, mask=mask
            )
    except ProviderCallError:
        raise
    except sdk_error as exc:  # the SDK's own base error (openai.OpenAIError, …)
        raise map_sdk_error(
            exc, sdk, model=model, base_url=base_url, timeout_s=timeout_s, mask=mask
        ) from None
    except Exception as exc:
        detail = mask(str(exc) or type(exc).__name__)[:300]
        raise bad_response(
            base_url, f"the exchange failed ({type(exc).__name__}: {detail})"
        ) from None


def bad_response(where: str, what: str) -> ProviderCallError:
    """A reply that came back but is no answer: retried and cooled down like a 5xx."""
    return ProviderCallError(f"bad response from {where}: {what}", retryable=True, status=200)


def snippet(body: bytes | str, mask: Callable[[str], str]) -> str:
    """The start of a body, redacted and quoted, with `…` when there is more. Redacted before
    it is cut, so that a secret across the cut is still recognised."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    masked = mask(text[: _SNIPPET * 10])
    return repr(masked[:_SNIPPET] + "…") if len(masked) > _SNIPPET else repr(masked)


def read_json_body(
    response: Any,
    *,
    where: str,
    sent_at: float,
    timeout_s: float,
    mask: Callable[[str], str],
    max_bytes: int = MAX_BODY_BYTES,
) -> Any:
    """The JSON value of a successful reply's body (an SDK's un-read streaming response).

    Raises `ProviderCallError` (`bad_response`) when the body is empty, is not JSON, breaks
    off, is longer than `max_bytes` (reading stops there), or is still coming `timeout_s`
    after the request was sent (`sent_at`, on `time.monotonic`).
    """
    status = response.status_code
    content_type = str(response.headers.get("content-type") or "").split(";")[0].strip()
    what = f"HTTP {status} {content_type or 'untyped'} body"
    data = bytearray()
    try:
        for chunk in response.iter_bytes():  # as each piece arrives
            data += chunk
            if len(data) > max_bytes:
                raise bad_response(
                    where, f"{what} is over {_size(max_bytes)}: stopped reading it there"
                )
            if time.monotonic() - sent_at > timeout_s:
                raise bad_response(
                    where,
                    f"{what} still coming {timeout_s:g}s after the request "
                    f"({len(data)} bytes read): stopped reading it",
                )
    except ProviderCallError:
        raise
    except Exception as exc:  # the connection broke, or the SDK's read timeout fired
        cause = "timed out" if time.monotonic() - sent_at >= timeout_s else "broke off"
        detail = mask(str(exc) or type(exc).__name__)[:200]
        raise bad_response(
            where, f"{what} {cause} after {len(data)} bytes ({type(exc).__name__}: {detail})"
        ) from None
    if not data.strip():
        raise bad_response(where, f"{what} is empty")
    try:
        return json.loads(bytes(data))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested past Python's limit
        raise bad_response(where, f"{what} is not JSON: {snippet(bytes(data), mask)}") from None


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n % 2**20 == 0 else f"{n} bytes"


@dataclass(frozen=True)
class Reply:
    """What shipline reads of a hosted API's reply, whatever its kind (token counts in the
    OpenAI convention: input includes cached)."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    tool_calls: tuple[ToolCall, ...]

    def completion(self, settings: ProviderSettings, configured_model: str) -> Completion:
        """The completion, priced at the model the reply names (else the configured one)."""
        model = self.model or configured_model
        return Completion(
            text=self.text,
            model=model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_tokens=self.cached_tokens,
            cost=call_cost(
                settings,
                model,
                input_tokens=self.input_tokens,
                output_tokens=self.output_tokens,
                cached_tokens=self.cached_tokens,
            ),
            tool_calls=self.tool_calls,
        )


class ShapeError(ValueError):
    """A reply's JSON is not the shape its API documents; the message says where."""


def json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)


class Shape:
    """Checked reads of a reply's JSON: each raises `ShapeError` naming the path and what it
    found, so code that reads a reply never meets a value of the wrong type."""

    @staticmethod
    def object(value: Any, path: str, *, optional: bool = False) -> dict[str, Any]:
        """An object; with `optional`, {} for null / missing."""
        if value is None and optional:
            return {}
        if not isinstance(value, dict):
            _wrong(path, value, "an object")
        return value

    @staticmethod
    def items(value: Any, path: str) -> list[Any]:
        """A list, or [] for null / missing."""
        if value is None:
            return []
        if not isinstance(value, list):
            _wrong(path, value, "a list")
        return value

    @staticmethod
    def text(value: Any, path: str) -> str:
        """A string, or "" for null / missing."""
        if value is None:
            return ""
        if not isinstance(value, str):
            _wrong(path, value, "a string")
        return value

    @staticmethod
    def model(value: Any, path: str) -> str:
        """The model a reply names, cut to `MAX_MODEL` characters ("" for null / missing)."""
        return Shape.text(value, path)[:MAX_MODEL]

    @staticmethod
    def count(value: Any, path: str) -> int:
        """A token count: a whole number from 0 to `MAX_COUNT`, or 0 for null / missing."""
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            _wrong(path, value, f"a count (a whole number from 0 to {MAX_COUNT})")
        return value

    @staticmethod
    def required(body: dict[str, Any], key: str, path: str) -> Any:
        if body.get(key) is None:
            raise ShapeError(f"{path}.{key} is {'null' if key in body else 'missing'}")
        return body[key]


def _wrong(path: str, value: Any, wanted: str) -> NoReturn:
    raise ShapeError(f"{path} is {json_kind(value)}, not {wanted}")


def shape_failure(
    where: str, api: str, data: Any, exc: ShapeError, mask: Callable[[str], str]
) -> ProviderCallError:
    """A JSON reply that is not the API's answer, with the start of what came instead. A body
    that carries an error object (some proxies answer errors with HTTP 200) gives its message."""
    if isinstance(data, Mapping) and "error" in data:
        detail = mask(body_detail(data, str(exc)))[:300]
        return bad_response(where, f"HTTP 200 carries an error: {detail}")
    body = snippet(json.dumps(data), mask)
    return bad_response(where, f"HTTP 200 JSON is not {api}: {str(exc)[:200]}: {body}")


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
