"""Split: break an epic into child tickets (children.json) with an acyclic dependency graph.

The deliverable is a JSON object `{"children": [...]}`; each child has a unique `key`, a
`kind` (feature or hotfix), a `title`, a `body` and `depends_on` (keys of other children).
`Children` is that shape as a pydantic model, and `CHILDREN_SCHEMA` its JSON schema for
constrained decoding. `check` gives the producer objections it can act on (the model cannot
say "child 'b' depends on 'zz', which is not a child key"); `parse_children` gives the engine
the typed children once the check has passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from .base import PhaseSpec
from .schema import json_schema

DELIVERABLE = "children.json"
ChildKind = Literal["feature", "hotfix"]
CHILD_KINDS: tuple[str, ...] = get_args(ChildKind)
_FENCED_JSON = re.compile(r"^```[A-Za-z]*[ \t]*\n(?P<body>.*)\n```$", re.DOTALL)

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_CLOSED = ConfigDict(
    frozen=True,
    json_schema_extra={"additionalProperties": False},  # what decoding may write; reading ignores
    json_schema_serialization_defaults_required=True,
)


class ChildTicket(BaseModel):
    """One child of an epic, as the split phase proposed it."""

    model_config = _CLOSED

    key: str = Field(min_length=1)
    kind: ChildKind
    title: _Text
    body: _Text
    depends_on: tuple[str, ...] = ()


class Children(BaseModel):
    """children.json: the epic's children, in the order they are created."""

    model_config = _CLOSED

    children: list[ChildTicket] = Field(min_length=1)


CHILDREN_SCHEMA: dict[str, Any] = json_schema(Children)


def _unfence(text: str) -> str:
    """The JSON text, without one ```json fence around it (small models add one)."""
    stripped = text.strip()
    match = _FENCED_JSON.match(stripped)
    return match.group("body") if match else stripped


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One dependency cycle as a closed path (`a, b, a`), or None; deterministic order."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt in graph and nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _child_objections(index: int, child: Any) -> list[str]:
    where = f"child {index}"
    if not isinstance(child, dict):
        return [f"{DELIVERABLE}: {where} is not a JSON object"]
    objections: list[str] = []
    key = child.get("key")
    if isinstance(key, str) and key.strip():
        where = f"child {key!r}"
    for field in ("key", "kind", "title", "body"):
        value = child.get(field)
        if field not in child:
            objections.append(f"{DELIVERABLE}: {where} has no {field!r}")
        elif not isinstance(value, str) or not value.strip():
            objections.append(f"{DELIVERABLE}: {where} has an empty {field!r}")
    kind = child.get("kind")
    if isinstance(kind, str) and kind.strip() and kind not in CHILD_KINDS:
        objections.append(f"{DELIVERABLE}: {where} has kind {kind!r}; use 'feature' or 'hotfix'")
    depends_on = child.get("depends_on", [])
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        objections.append(f"{DELIVERABLE}: {where} 'depends_on' must be a list of child keys")
    return objections


def check(text: str, inputs: Mapping[str, str]) -> list[str]:
    """Valid JSON of the documented shape, unique keys, known kinds, acyclic dependencies."""
    try:
        data = json.loads(_unfence(text))
    except json.JSONDecodeError as error:
        return [f"{DELIVERABLE} is not valid JSON: {error}"]
    if not isinstance(data, dict) or not isinstance(data.get("children"), list):
        return [f'{DELIVERABLE} must be a JSON object {{"children": [ … ]}}']
    children: list[Any] = data["children"]
    if not children:
        return [f"{DELIVERABLE} has no children: an epic splits into at least one ticket"]
    objections: list[str] = []
    graph: dict[str, list[str]] = {}
    for index, child in enumerate(children, start=1):
        objections += _child_objections(index, child)
        if not isinstance(child, dict):
            continue
        key = child.get("key")
        if not isinstance(key, str) or not key.strip():
            continue
        if key in graph:
            objections.append(f"{DELIVERABLE}: the key {key!r} is used by more than one child")
            continue
        depends_on = child.get("depends_on", [])
        graph[key] = (
            [d for d in depends_on if isinstance(d, str)] if isinstance(depends_on, list) else []
        )
    for key, depends_on in graph.items():
        for dependency in depends_on:
            if dependency == key:
                objections.append(f"{DELIVERABLE}: child {key!r} depends on itself")
            elif dependency not in graph:
                objections.append(
                    f"{DELIVERABLE}: child {key!r} depends on {dependency!r}, which is not "
                    "a child key"
                )
    acyclic = {k: [d for d in deps if d != k] for k, deps in graph.items()}
    cycle = _find_cycle(acyclic)
    if cycle:
        objections.append(f"{DELIVERABLE} has a dependency cycle: {' -> '.join(cycle)}")
    return objections


def parse_children(text: str) -> list[ChildTicket]:
    """The children of a children.json that passed `check`, in file order.

    Raises ValueError (with every objection) when the text does not pass the check.
    """
    objections = check(text, {})
    if objections:
        raise ValueError("; ".join(objections))
    return Children.model_validate_json(_unfence(text)).children


PHASE = PhaseSpec(
    name="split",
    deliverable=DELIVERABLE,
    inputs=("spec.md", "design.md"),
    purpose="Split the epic into child tickets with explicit, acyclic dependencies.",
    check=check,
    template="split.md.j2",
    output="json",
)
