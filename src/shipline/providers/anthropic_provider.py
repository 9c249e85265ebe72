"""Anthropic's Messages API (or a server that speaks it) through the official `anthropic` SDK.

System messages go to the top-level `system` field. The SDK's own retries are off: the
router's guard owns retries. JSON output is asked for by prompt, then parsed, checked against
the schema and repaired up to the request's `json_repairs` (None: the caller checks it). The
Messages API of SDK 2.x has no sampling parameters, so `request.temperature` is not sent.
Token counts are normalised to the OpenAI convention: `input_tokens` includes cache reads and
writes, `cached_tokens` counts cache reads.
A request's `tools` go out as `tools` (`input_schema`), and the history's tool calls as
assistant `tool_use` blocks answered by user `tool_result` blocks (see `NativeTools` for when
they are not sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import anthropic

from shipline.config import ProviderSettings
from shipline.errors import ConfigError
from shipline.providers.base import Completion, CompletionRequest, Message, ToolCall, as_text
from shipline.providers.hosted import NativeTools, Redactor, api_key_from_env, map_sdk_error
from shipline.providers.pricing import call_cost
from shipline.providers.structured import complete_json

ANTHROPIC_URL = "https://api.anthropic.com"


class AnthropicProvider:
    """`[providers.NAME] kind = "anthropic"`: model, base_url, api_key_env, timeout_s, prices."""

    def __init__(
        self, name: str, settings: ProviderSettings, *, environ: Mapping[str, str] | None = None
    ) -> None:
        if not settings.model:
            raise ConfigError(f'shipline.toml [providers.{name}] needs model = "MODEL-NAME"')
        self.name = name
        self.in_house = settings.in_house
        self.model = settings.model
        self.base_url = settings.base_url or ANTHROPIC_URL
        self._settings = settings
        key = api_key_from_env(name, settings, environ)
        self._mask = Redactor(key)
        # SDK 2.x sends the key as a bearer token; servers that speak the classic Messages API
        # (proxies, test servers) read x-api-key, which api.anthropic.com accepts as well.
        self._client = anthropic.Anthropic(
            api_key=key,
            base_url=self.base_url,
            timeout=settings.timeout_s,
            max_retries=0,
            default_headers={"x-api-key": key},
        )
        self._native_tools = NativeTools(settings.native_tools)

    def complete(self, request: CompletionRequest) -> Completion:
        messages = list(request.messages)
        if request.json_schema is None:
            return self._native_tools.complete(
                request, lambda native: self._send(messages, request, native=native)
            )
        return complete_json(
            lambda m: self._send(m, request),
            messages,
            request.json_schema,
            repairs=request.json_repairs,
        )

    def _send(
        self, messages: list[Message], request: CompletionRequest, *, native: bool = False
    ) -> Completion:
        system = "\n\n".join(m.content for m in messages if m.role == "system")
        options: dict[str, Any] = {"system": system} if system else {}
        turns: list[Any]  # the SDK's TypedDicts, built by hand
        if native:
            turns = _native_turns(m for m in messages if m.role != "system")
            options["tools"] = [
                {
                    "name": t["name"],
                    "description": t["description"],
                    "input_schema": t["parameters"],
                }
                for t in request.tools
            ]
        else:
            turns = [
                {"role": m.role, "content": m.content}
                for m in as_text(messages)
                if m.role != "system"
            ]
        try:
            response = self._client.messages.create(
                model=self.model,
                messages=turns,
                max_tokens=request.max_tokens,
                **options,
            )
        except anthropic.AnthropicError as exc:
            raise map_sdk_error(
                exc,
                anthropic,
                model=self.model,
                base_url=self.base_url,
                timeout_s=self._settings.timeout_s,
                mask=self._mask,
            ) from None
        text = "".join(
            block.text for block in response.content if getattr(block, "type", "") == "text"
        )
        calls = tuple(
            ToolCall(block.id, block.name, dict(block.input))
            if isinstance(block.input, dict)
            else ToolCall(block.id, block.name, {}, f"the input of {block.name} is not an object")
            for block in response.content
            if getattr(block, "type", "") == "tool_use"
        )
        usage = response.usage
        cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
        cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
        input_tokens = usage.input_tokens + cache_read + cache_write
        model = response.model or self.model
        return Completion(
            text=text,
            model=model,
            input_tokens=input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=cache_read,
            cost=call_cost(
                self._settings,
                model,
                input_tokens=input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=cache_read,
            ),
            tool_calls=calls,
        )


def _native_turns(messages: Iterable[Message]) -> list[Any]:
    """Messages API turns with `tool_use` and `tool_result` blocks. Consecutive turns of one
    role are merged, so that every tool result of a turn sits in the one user turn after it."""
    turns: list[dict[str, Any]] = []
    for m in messages:
        blocks: list[dict[str, Any]] = []
        if m.tool_call_id:
            blocks.append(
                {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            )
        elif m.content:
            blocks.append({"type": "text", "text": m.content})
        blocks += [
            {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
            for c in m.tool_calls
        ]
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": m.role, "content": blocks})
    return turns
