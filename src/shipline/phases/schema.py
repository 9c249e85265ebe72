"""JSON schemas from pydantic models, in the form that constrained decoding takes.

A JSON deliverable (children.json) and the validator's verdict are pydantic models; providers
get their schema: llama.cpp turns it into a grammar, OpenAI-compatible servers take it as
`response_format`, the others read it in the prompt. The schema describes the JSON as it is
written (every field present, no titles), and closes every object to the fields it declares.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema as a model should write it: every field required, no titles."""
    schema = model.model_json_schema(by_alias=True, mode="serialization")
    return _untitled(schema)


def _untitled(node: Any) -> Any:
    # A schema's "title" is a string; a property called "title" is a schema (a dict): kept.
    if isinstance(node, dict):
        return {
            key: _untitled(value)
            for key, value in node.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(node, list):
        return [_untitled(item) for item in node]
    return node
