"""The scripted provider: deterministic replies from a YAML file of rules.

A product feature, not a test double: it replays a workflow for demos, CI and regression.
Format (docs/scripted-provider.md):

    rules:                 # first matching rule in file order wins
      - phase: discovery   # a phase name, or "*"
        role: producer     # producer | validator | "*" (default "*")
        attempt: 1         # optional: matches only this attempt
        step: 2            # optional: only this model turn of a coding session
        kind: feature      # optional: ticket kind
        title: shout       # optional: case-insensitive substring of the ticket title
        reply: "..."       # or reply_file: a path relative to the script
        delay_s: 0         # optional simulated latency
        error: "..."       # optional: the call fails with this message
        tokens: {input: 120, output: 340}   # optional; default: an estimate

Cost is 0, unless the provider entry sets price_input_per_mtok / price_output_per_mtok:
then a replay carries a bill, which budgets and `shipline cost` see like any other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipline.errors import ConfigError, ProviderError
from shipline.phases import PHASES
from shipline.providers.base import Completion, CompletionRequest, estimate_tokens


class TokenCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: int = Field(ge=0)
    output: int = Field(ge=0)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phase: str
    role: Literal["producer", "validator", "*"] = "*"
    attempt: int | None = Field(default=None, ge=1)
    step: int | None = Field(default=None, ge=1)
    kind: str | None = None
    title: str | None = None
    reply: str | None = None
    reply_file: str | None = None
    delay_s: float = Field(default=0.0, ge=0)
    error: str | None = None
    tokens: TokenCounts | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> Rule:
        outcomes = [x for x in (self.reply, self.reply_file, self.error) if x is not None]
        if len(outcomes) != 1:
            raise ValueError("each rule needs exactly one of reply, reply_file or error")
        return self

    def matches(self, request: CompletionRequest) -> bool:
        return (
            self.phase in ("*", request.phase)
            and self.role in ("*", request.role)
            and (self.attempt is None or self.attempt == request.attempt)
            and (self.step is None or self.step == request.step)
            and (self.kind is None or self.kind == request.ticket_kind)
            and (self.title is None or self.title.lower() in request.ticket_title.lower())
        )


class Script(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Rule]


class ScriptedProvider:
    """Replies by the first rule that matches (phase, role, attempt, kind, title)."""

    def __init__(
        self,
        name: str,
        script: Script,
        base_dir: Path,
        *,
        in_house: bool = True,
        prices: tuple[float, float] | None = None,
    ) -> None:
        self.name = name
        self._prices = prices  # USD per million input/output tokens, to replay a bill
        self.in_house = in_house
        self._rules = script.rules
        self._base_dir = base_dir

    @classmethod
    def from_file(
        cls,
        name: str,
        path: Path,
        *,
        in_house: bool = True,
        prices: tuple[float, float] | None = None,
    ) -> ScriptedProvider:
        try:
            data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"[providers.{name}] script {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"[providers.{name}] script {path} is not valid YAML: {exc}"
            ) from None
        try:
            script = Script.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"script {path} [{where}]: {first['msg']}") from None
        for index, rule in enumerate(script.rules):
            if rule.phase != "*" and rule.phase not in PHASES:
                raise ConfigError(
                    f"script {path} [rules.{index}.phase]: {rule.phase!r} is not a phase "
                    f'(known: {", ".join(sorted(PHASES))}, or "*")'
                )
            if rule.reply_file is not None and not (path.parent / rule.reply_file).is_file():
                raise ConfigError(
                    f"script {path} [rules.{index}.reply_file]: {rule.reply_file} does not exist"
                )
        return cls(name, script, path.parent, in_house=in_house, prices=prices)

    def complete(self, request: CompletionRequest) -> Completion:
        rule = next((r for r in self._rules if r.matches(request)), None)
        if rule is None:
            raise ProviderError(
                f"scripted provider {self.name!r} has no rule for phase={request.phase} "
                f"role={request.role} attempt={request.attempt}"
                + (f" step={request.step}" if request.step else "")
                + f" kind={request.ticket_kind} "
                f"title={request.ticket_title!r}",
                retryable=False,
            )
        if rule.delay_s:
            time.sleep(rule.delay_s)
        if rule.error is not None:
            raise ProviderError(f"scripted error: {rule.error}", retryable=True)
        if rule.reply_file is not None:
            text = (self._base_dir / rule.reply_file).read_text(encoding="utf-8")
        else:
            text = rule.reply or ""
        prompt = "".join(m.content for m in request.messages)
        tokens = rule.tokens or TokenCounts(
            input=estimate_tokens(prompt), output=estimate_tokens(text)
        )
        return Completion(
            text=text,
            model="scripted",
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            cost=(
                (tokens.input * self._prices[0] + tokens.output * self._prices[1]) / 1_000_000
                if self._prices
                else 0.0
            ),
        )

    def estimate_cost(self, input_tokens: int) -> float | None:
        """What `input_tokens` cost at the entry's input price (0 without prices)."""
        return input_tokens * self._prices[0] / 1_000_000 if self._prices else 0.0
