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
The reply's body is read and checked here (`read_json_body`, `read_message`), not by the SDK:
whatever a server answers is a completion or a `ProviderCallError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import anthropic

from shipline.config import ProviderSettings
from shipline.errors import ConfigError
from shipline.providers.base import Completion, CompletionRequest, Message, ToolCall, as_text
from shipline.providers.hosted import (
    NativeTools,
    Redactor,
    Reply,
    Shape,
    ShapeError,
    api_key_from_env,
    exchange,
    shape_failure,
)
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
        data = exchange(
            lambda: self._client.messages.with_streaming_response.create(
                model=self.model,
                messages=turns,
                max_tokens=request.max_tokens,
                **options,
            ),
            anthropic,
            anthropic.AnthropicError,
            model=self.model,
            base_url=self.base_url,
            timeout_s=self._settings.timeout_s,
            mask=self._mask,
        )
        try:
            reply = read_message(data)
        except ShapeError as exc:
            raise shape_failure(self.base_url, "a message", data, exc, self._mask) from None
        return reply.completion(self._settings, self.model)

    def estimate_cost(self, input_tokens: int) -> float | None:
        """What `input_tokens` in cost at this entry's price (None: unknown)."""
        return call_cost(self._settings, self.model, input_tokens=input_tokens, output_tokens=0)


def read_message(data: Any) -> Reply:
    """A Messages API reply's JSON, checked field by field (`ShapeError` says where it is
    wrong). Text blocks are joined; `tool_use` blocks are tool calls; other block types
    (thinking, …) are skipped. Usage may be missing (counted as 0 tokens)."""
    body = Shape.object(data, "$")
    blocks = Shape.items(Shape.required(body, "content", "$"), "$.content")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, value in enumerate(blocks):
        path = f"$.content[{i}]"
        block = Shape.object(value, path)
        kind = Shape.text(block.get("type"), f"{path}.type")
        if kind == "text":
            texts.append(Shape.text(Shape.required(block, "text", path), f"{path}.text"))
        elif kind == "tool_use":
            use_id = Shape.text(block.get("id"), f"{path}.id")
            name = Shape.text(Shape.required(block, "name", path), f"{path}.name")
            data_in = block.get("input")
            calls.append(
                ToolCall(use_id, name, data_in)
                if isinstance(data_in, dict)
                else ToolCall(use_id, name, {}, f"the input of {name} is not an object")
            )
    usage = Shape.object(body.get("usage"), "$.usage", optional=True)
    cache_read = Shape.count(
        usage.get("cache_read_input_tokens"), "$.usage.cache_read_input_tokens"
    )
    cache_write = Shape.count(
        usage.get("cache_creation_input_tokens"), "$.usage.cache_creation_input_tokens"
    )
    return Reply(
        text="".join(texts),
        model=Shape.model(body.get("model"), "$.model"),
        input_tokens=Shape.count(usage.get("input_tokens"), "$.usage.input_tokens")
        + cache_read
        + cache_write,
        output_tokens=Shape.count(usage.get("output_tokens"), "$.usage.output_tokens"),
        cached_tokens=cache_read,
        tool_calls=tuple(calls),
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
