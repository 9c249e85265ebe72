"""Read a validator model's answer as a verdict (pure; garbage in, None and the reason out).

The verdict is the reply's final, whole JSON answer (`providers.structured.final_json`): the
whole reply, a fenced block that ends it, or an object that ends it after prose with nothing
verdict-like before it. Never the first verdict-like object anywhere: a validator that echoes
its prompt must not pass. `strip_fence` serves JSON deliverables (children.json), which must
be the whole reply, fenced or not.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from shipline.phases.verdict import VERDICT_SCHEMA, Verdict
from shipline.providers.structured import answer_keys, final_json

_KEYS = answer_keys(VERDICT_SCHEMA)  # "pass", "objections"
_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group("body") if match else text.strip()


def read_verdict(text: str) -> tuple[Verdict | None, str]:
    """(the verdict in `text`, "") or (None, what is wrong: said back to the validator)."""
    value, problem = final_json(text, _KEYS)
    if problem is not None:
        return None, problem
    try:
        return Verdict.model_validate(value), ""
    except ValidationError as exc:
        return None, "; ".join(
            f"${''.join(f'.{p}' for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
        )


def parse_verdict(text: str) -> Verdict | None:
    """`{"pass": bool, "objections": [str, ...]}` → Verdict, anything else → None."""
    return read_verdict(text)[0]
