"""JSON output from any provider: ask for it, read it from the reply, check it, ask again.

Providers with native structured output still have their reply parsed, because servers that
claim the OpenAI API do not all honour `response_format`. The schema check covers the subset
verdicts and plans use (type, required, properties, items, enum); it is not a full JSON Schema
validator.

The answer is the reply's final, whole JSON value (`final_json`), never the first one found:
a reply that quotes or echoes its prompt must not answer with the prompt's examples. The
reply is one JSON value; or it ends with a fenced block that holds one whole JSON value; or it
ends with a JSON object or array after prose. In the last two cases nothing before the answer
may look like an answer (a JSON object with one of the schema's keys, even nested in another
value): a reply that holds two answers holds none.

Asking again is one layer, whoever drives it. A provider called on its own repairs its reply
(`CompletionRequest.json_repairs`). The engine asks with `json_repairs=None`: one call, the
reply as it came, and the validator's `[validator] parse_retries` is the only re-ask, built
with `reask` so the model sees its reply and what was wrong with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator
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
    """Every JSON object or array in `text`: fenced blocks first, then the whole text, scanned
    from each `{` or `[` that is not inside a value already found."""
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


def final_json(text: str, keys: Collection[str]) -> tuple[Any, str | None]:
    """The reply's final, whole JSON answer, or (None, what is wrong: said back to the model).

    `keys` are the answer's own keys (a schema's properties): a JSON object before the final
    value that has one of them is an earlier answer, and makes the reply ambiguous.
    """
    reply = text.strip()
    if not reply:
        return None, "the reply is empty"
    try:
        return json.loads(reply), None  # the whole reply is the answer
    except (ValueError, RecursionError):
        pass
    if reply.endswith("```"):
        opening = reply.rfind("```", 0, len(reply) - 3)
        if opening < 0:
            return None, "the reply ends with ``` but opens no fenced block"
        body = _FENCE_INFO.sub("", reply[opening + 3 : -3], count=1).strip()
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return None, f"the final fenced block is not one whole JSON value ({exc})"
        before = reply[:opening]
    else:
        found = _trailing_value(reply)
        if found is None:
            if next(json_values(reply), None) is not None:
                return None, (
                    "the JSON is not the final element of the reply: end the reply with it, "
                    "with nothing after it"
                )
            return None, "no JSON value found"
        value, start = found
        before = reply[:start]
    earlier = next((v for v in json_values(before) if _looks_like_answer(v, keys)), None)
    if earlier is not None:
        return None, (
            "the reply holds more than one JSON answer (an earlier one: "
            f"{json.dumps(earlier)[:80]}): reply with exactly one, at the end"
        )
    return value, None


_FENCE_INFO = re.compile(r"^[A-Za-z0-9_+-]*[ \t]*\n")


def _trailing_value(reply: str) -> tuple[Any, int] | None:
    """The outermost JSON object or array that ends where `reply` ends, and where it starts."""
    if reply[-1] not in "}]":
        return None
    decoder = json.JSONDecoder()
    for start, char in enumerate(reply):
        if char not in "{[":
            continue
        try:
            value, end = decoder.raw_decode(reply, start)
        except (ValueError, RecursionError):
            continue
        if end == len(reply):
            return value, start
    return None


def _looks_like_answer(value: Any, keys: Collection[str]) -> bool:
    """Is `value`, or any value inside it, an object with one of the answer's `keys`?"""
    if isinstance(value, dict):
        return any(k in value for k in keys) or any(
            _looks_like_answer(v, keys) for v in value.values()
        )
    if isinstance(value, list):
        return any(_looks_like_answer(v, keys) for v in value)
    return False


def answer_keys(schema: dict[str, Any]) -> tuple[str, ...]:
    """The keys an answer to `schema` has (its top-level properties)."""
    return tuple(schema.get("properties", {}))


def parse_json(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """The reply's final, whole JSON value if it fits `schema`, or (None, what went wrong)."""
    value, problem = final_json(text, answer_keys(schema))
    if problem is not None:
        return None, problem
    problems = schema_problems(value, schema)
    if problems:
        return None, "; ".join(problems[:5])
    return value, None


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
