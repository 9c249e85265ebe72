"""Any OpenAI-compatible chat API through the official `openai` SDK and a `base_url`.

Groq, OpenAI, OpenRouter, Ollama, vLLM and llama.cpp's server all speak it. The SDK's own
retries are off: the router's guard owns retries, cooldown and limits. JSON output uses the
server's `response_format` json_schema; a server that refuses it (HTTP 400) is asked by
prompt from then on, and the reply is parsed, checked and repaired up to the request's
`json_repairs` (unless that is None: the caller checks it).
A request's `tools` go out as `tools` (function definitions), and the history's tool calls as
an assistant turn's `tool_calls` followed by `role: "tool"` turns (see `NativeTools` for when
they are not sent).
The reply's body is read and checked here (`read_json_body`, `read_chat_completion`), not by
the SDK: whatever a server answers is a completion or a `ProviderCallError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

import openai

from shipline.config import ProviderSettings
from shipline.errors import ConfigError
from shipline.providers.base import Completion, CompletionRequest, Message, ToolCall, as_text
from shipline.providers.guard import ProviderCallError
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

OPENAI_URL = "https://api.openai.com/v1"


class OpenAICompatProvider:
    """`[providers.NAME] kind = "openai"`: model, base_url, api_key_env, timeout_s, prices."""

    def __init__(
        self, name: str, settings: ProviderSettings, *, environ: Mapping[str, str] | None = None
    ) -> None:
        if not settings.model:
            raise ConfigError(f'shipline.toml [providers.{name}] needs model = "MODEL-NAME"')
        self.name = name
        self.in_house = settings.in_house
        self.model = settings.model
        self.base_url = settings.base_url or OPENAI_URL
        self._settings = settings
        key = api_key_from_env(name, settings, environ)
        self._mask = Redactor(key)
        self._client = openai.OpenAI(
            api_key=key, base_url=self.base_url, timeout=settings.timeout_s, max_retries=0
        )
        # api.openai.com wants max_completion_tokens; most other servers read only max_tokens.
        self._limit_field = (
            "max_completion_tokens"
            if urlparse(self.base_url).hostname == "api.openai.com"
            else "max_tokens"
        )
        self._native_json = True
        self._native_tools = NativeTools(settings.native_tools)

    def complete(self, request: CompletionRequest) -> Completion:
        messages = list(request.messages)
        schema = request.json_schema
        if schema is None:
            return self._native_tools.complete(
                request, lambda native: self._send(messages, request, None, native=native)
            )
        if self._native_json:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": False},
            }
            try:
                return complete_json(
                    lambda m: self._send(m, request, response_format),
                    messages,
                    schema,
                    repairs=request.json_repairs,
                    instruct=False,
                )
            except ProviderCallError as exc:
                if exc.status != 400:
                    raise
                self._native_json = False  # this server does not take json_schema
        return complete_json(
            lambda m: self._send(m, request, None), messages, schema, repairs=request.json_repairs
        )

    def _send(
        self,
        messages: list[Message],
        request: CompletionRequest,
        response_format: dict[str, Any] | None,
        *,
        native: bool = False,
    ) -> Completion:
        options: dict[str, Any] = {self._limit_field: request.max_tokens}
        if response_format is not None:
            options["response_format"] = response_format
        if native:
            options["tools"] = [
                {"type": "function", "function": dict(spec)} for spec in request.tools
            ]
        wire = _wire_messages(messages if native else as_text(messages))
        data = exchange(
            lambda: self._client.chat.completions.with_streaming_response.create(
                model=self.model,
                messages=wire,
                temperature=request.temperature,
                **options,
            ),
            openai,
            openai.OpenAIError,
            model=self.model,
            base_url=self.base_url,
            timeout_s=self._settings.timeout_s,
            mask=self._mask,
        )
        try:
            reply = read_chat_completion(data)
        except ShapeError as exc:
            raise shape_failure(self.base_url, "a chat completion", data, exc, self._mask) from None
        return reply.completion(self._settings, self.model)

    def estimate_cost(self, input_tokens: int) -> float | None:
        """What `input_tokens` in cost at this entry's price (None: unknown)."""
        return call_cost(self._settings, self.model, input_tokens=input_tokens, output_tokens=0)


def read_chat_completion(data: Any) -> Reply:
    """A chat completion's JSON, checked field by field (`ShapeError` says where it is wrong).

    The first choice's message counts. Its content may be null (a reply of tool calls only);
    usage may be missing (counted as 0 tokens); the model may be missing (the configured one).
    """
    body = Shape.object(data, "$")
    choices = Shape.items(Shape.required(body, "choices", "$"), "$.choices")
    if not choices:
        raise ShapeError("$.choices is empty")
    choice = Shape.object(choices[0], "$.choices[0]")
    message = Shape.object(
        Shape.required(choice, "message", "$.choices[0]"), "$.choices[0].message"
    )
    path = "$.choices[0].message"
    calls = Shape.items(message.get("tool_calls"), f"{path}.tool_calls")
    usage = Shape.object(body.get("usage"), "$.usage", optional=True)
    details = Shape.object(
        usage.get("prompt_tokens_details"), "$.usage.prompt_tokens_details", optional=True
    )
    return Reply(
        text=Shape.text(message.get("content"), f"{path}.content"),
        model=Shape.model(body.get("model"), "$.model"),
        input_tokens=Shape.count(usage.get("prompt_tokens"), "$.usage.prompt_tokens"),
        output_tokens=Shape.count(usage.get("completion_tokens"), "$.usage.completion_tokens"),
        cached_tokens=Shape.count(
            details.get("cached_tokens"), "$.usage.prompt_tokens_details.cached_tokens"
        ),
        tool_calls=tuple(
            _read_call(call, f"{path}.tool_calls[{i}]") for i, call in enumerate(calls)
        ),
    )


def _wire_messages(messages: Sequence[Message]) -> Any:
    """Chat-completions messages; tool calls and their results in the API's own shape."""
    wire: list[dict[str, Any]] = []
    for m in messages:
        if m.tool_call_id:
            wire.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
        elif m.tool_calls:
            calls = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in m.tool_calls
            ]
            wire.append({"role": m.role, "content": m.content or None, "tool_calls": calls})
        else:
            wire.append({"role": m.role, "content": m.content})
    return wire


def _read_call(value: Any, path: str) -> ToolCall:
    """One tool call. Arguments that are not a JSON object make a call that is answered with
    what is wrong (`ToolCall.error`), not run; a call of the wrong shape is a `ShapeError`."""
    call = Shape.object(value, path)
    call_id = Shape.text(call.get("id"), f"{path}.id")
    function = call.get("function")
    if function is None:  # a custom (non-function) tool call: nothing we offered
        kind = Shape.text(call.get("type"), f"{path}.type") or "?"
        return ToolCall(call_id, kind, {}, "not a function call")
    function = Shape.object(function, f"{path}.function")
    name = Shape.text(Shape.required(function, "name", f"{path}.function"), f"{path}.function.name")
    raw = function.get("arguments")
    if isinstance(raw, dict):  # some servers send the object itself
        return ToolCall(call_id, name, raw)
    raw = Shape.text(raw, f"{path}.function.arguments") or "{}"
    try:
        arguments = json.loads(raw)
    except (ValueError, RecursionError):
        arguments = None
    if not isinstance(arguments, dict):
        error = f"the arguments of {name} are not a JSON object: {raw[:200]}"
        return ToolCall(call_id, name, {}, error)
    return ToolCall(call_id, name, arguments)
