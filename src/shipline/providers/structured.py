"""JSON output from any provider: ask for it, find it in the reply, check it, ask again.

Providers with native structured output still have their reply parsed, because servers that
claim the OpenAI API do not all honour `response_format`. The schema check covers the subset
verdicts and plans use (type, required, properties, items, enum); it is not a full JSON Schema
validator.

Asking again is one layer, whoever drives it. A provider called on its own repairs its reply
(`CompletionRequest.json_repairs`). The engine asks with `json_repairs=None`: one call, the
reply as it came, and the validator's `[validator] parse_retries` is the only re-ask, built
with `reask` so the model sees its reply and what was wrong with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from shipline.providers.base import Completion, Message
from shipline.providers.guard import ProviderCallError

_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_instruction(schema: dict[str, Any]) -> str:
    return (
        "Reply with one JSON value that matches this JSON schema, and nothing else "
        "(no prose, no code fence):\n" + json.dumps(schema, sort_keys=True)
    )


def schema_problems(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Where `value` breaks `schema` (an empty list when it fits)."""
    expected = schema.get("type")
    names = [expected] if isinstance(expected, str) else list(expected or [])
    if names:
        kinds = tuple(t for n in names for t in _TYPES.get(n, ()))
        is_bool = isinstance(value, bool)
        if not isinstance(value, kinds) or (is_bool and "boolean" not in names):
            return [f"{path} should be {' or '.join(names)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path} should be one of {schema['enum']}, got {value!r}"]
    problems: list[str] = []
    if isinstance(value, dict):
        problems += [f"{path}.{k} is missing" for k in schema.get("required", []) if k not in value]
        for key, sub in schema.get("properties", {}).items():
            if key in value and isinstance(sub, dict):
                problems += schema_problems(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += schema_problems(item, schema["items"], f"{path}[{i}]")
    return problems


def json_values(text: str) -> Iterator[Any]:
    """Every JSON object or array in `text`, in the order worth trying: fenced blocks first,
    then the whole text, scanned from each `{` or `[` that is not inside a value already found
    (an object nested in a rejected answer is not an answer)."""
    decoder = json.JSONDecoder()
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        start = 0
        while start < len(candidate):
            if candidate[start] not in "{[":
                start += 1
                continue
            try:
                value, end = decoder.raw_decode(candidate, start)
            except (json.JSONDecodeError, RecursionError):
                start += 1
                continue
            yield value
            start = end


def parse_json(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The first JSON value in `text` that fits `schema`, or (None, what went wrong)."""
    first_problem: str | None = None
    for value in json_values(text):
        problems = schema_problems(value, schema)
        if not problems:
            return value, None
        first_problem = first_problem or "; ".join(problems[:5])
    return None, first_problem or "no JSON value found"


def reask(messages: list[Message], reply: str, problem: str) -> list[Message]:
    """`messages`, the model's reply, and a request to answer again with valid JSON."""
    return [
        *messages,
        Message("assistant", reply),
        Message(
            "user",
            f"That reply is not valid: {problem}. Reply again with only the JSON value, "
            "matching the schema.",
        ),
    ]


def complete_json(
    send: Callable[[list[Message]], Completion],
    messages: list[Message],
    schema: dict[str, Any],
    *,
    repairs: int | None = 2,
    instruct: bool = True,
) -> Completion:
    """Call `send` until its text is JSON that fits `schema`, at most `1 + repairs` times.

    With `instruct`, the schema is added to the system prompt. Each repair shows the model
    its reply and what was wrong with it. The result's text is the JSON alone, and its
    token counts and cost add up every call made. With `repairs=None` the caller checks the
    reply and asks again itself: `send` is called once and its reply returned as it came.
    """
    if instruct:
        messages = [Message("system", schema_instruction(schema)), *messages]
    if repairs is None:
        return send(messages)
    spent: list[Completion] = []
    problem = ""
    for _ in range(repairs + 1):
        completion = send(messages)
        spent.append(completion)
        value, problem_or_none = parse_json(completion.text, schema)
        if problem_or_none is None:
            return _summed(spent, json.dumps(value))
        problem = problem_or_none
        messages = reask(messages, completion.text, problem)
    raise ProviderCallError(
        f"no schema-valid JSON after {len(spent)} tries: {problem}",
        retryable=False,
        provider_fault=False,
        usage=_summed(spent, spent[-1].text),
    )


def _summed(spent: list[Completion], text: str) -> Completion:
    costs = [c.cost for c in spent]
    return Completion(
        text=text,
        model=spent[-1].model,
        input_tokens=sum(c.input_tokens for c in spent),
        output_tokens=sum(c.output_tokens for c in spent),
        cached_tokens=sum(c.cached_tokens for c in spent),
        cost=None if any(c is None for c in costs) else sum(c or 0.0 for c in costs),
        extra={"json_tries": len(spent)},
    )
