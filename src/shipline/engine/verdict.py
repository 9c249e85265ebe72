"""Read a validator model's answer as a verdict (pure; garbage in, None and the reason out).

The answer may be bare JSON, fenced, or JSON inside prose: the first JSON value that is a
valid `Verdict` counts. `strip_fence` also serves JSON deliverables (children.json).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from shipline.phases.verdict import Verdict
from shipline.providers.structured import json_values

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group("body") if match else text.strip()


def read_verdict(text: str) -> tuple[Verdict | None, str]:
    """(the verdict in `text`, "") or (None, what is wrong: said back to the validator)."""
    problem: str | None = None
    for value in json_values(text):
        try:
            return Verdict.model_validate(value), ""
        except ValidationError as exc:
            problem = problem or "; ".join(
                f"${''.join(f'.{p}' for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]
            )
    return None, problem or "no JSON value found"


def parse_verdict(text: str) -> Verdict | None:
    """`{"pass": bool, "objections": [str, ...]}` → Verdict, anything else → None."""
    return read_verdict(text)[0]
