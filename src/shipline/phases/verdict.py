"""The validator's verdict: pass, or objections. A pydantic model, and the schema from it.

A validator model answers `{"pass": bool, "objections": [str, ...]}`. Reading is lenient
where it costs nothing (objections are trimmed, blank ones dropped, a missing list is empty,
unknown keys are ignored); `pass` must be a JSON boolean. A rejection without a reason gets
one, so a failed attempt always says why. `VERDICT_SCHEMA` is the shape that constrained
decoding asks for: both keys, nothing else.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from .schema import json_schema

NO_REASON = "the validator rejected the deliverable without giving a reason"


class Verdict(BaseModel):
    """The validator's answer about one attempt."""

    model_config = ConfigDict(
        populate_by_name=True,
        # Reading ignores unknown keys; the schema that decoding is held to allows none.
        json_schema_extra={"additionalProperties": False},
        json_schema_serialization_defaults_required=True,
    )

    passed: StrictBool = Field(alias="pass")
    objections: list[str] = Field(default_factory=list)

    @field_validator("objections", mode="before")
    @classmethod
    def _trimmed(cls, raw: Any) -> Any:
        if not isinstance(raw, list):
            return raw  # not a list: the field's own check rejects it
        return [text for text in (str(o).strip() for o in raw) if text]

    @model_validator(mode="after")
    def _rejection_has_a_reason(self) -> Verdict:
        if not self.passed and not self.objections:
            self.objections = [NO_REASON]
        return self


VERDICT_SCHEMA: dict[str, Any] = json_schema(Verdict)
