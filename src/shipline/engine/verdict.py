"""Parse a validator model's answer into a verdict (pure; garbage in, None out)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


@dataclass(frozen=True)
class ParsedVerdict:
    passed: bool
    objections: list[str]


def strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group("body") if match else text.strip()


def parse_verdict(text: str) -> ParsedVerdict | None:
    """`{"pass": bool, "objections": [str, ...]}` → ParsedVerdict, anything else → None."""
    try:
        data = json.loads(strip_fence(text))
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pass"), bool):
        return None
    raw = data.get("objections", [])
    if not isinstance(raw, list):
        return None
    objections = [str(o).strip() for o in raw if str(o).strip()]
    if not data["pass"] and not objections:
        objections = ["the validator rejected the deliverable without giving a reason"]
    return ParsedVerdict(passed=data["pass"], objections=objections)
