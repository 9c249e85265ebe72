"""What a front-end reads: typed, read-only views of tickets, costs, routes and worktrees.

The CLI prints them (rich tables, or `--json`: `model_dump(mode="json")`), and the web board
and MCP server return the same JSON, so `TicketDetail.model_json_schema()` is the contract a
front-end can rely on. Timestamps are aware UTC datetimes, written in ISO 8601 with their
offset (`2026-11-22T00:31:35.558353+00:00`). The route explanation is the engine's own
pydantic model (`engine/explain.py`), shown here as it is.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainSerializer, WithJsonSchema

from shipline.costs import GroupBy
from shipline.engine.explain import PhaseRoute, RoleRoute, RouteExplanation
from shipline.workspaces.worktree import WorkspaceState

Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda at: at.isoformat(), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class View(BaseModel):
    """A view is a snapshot: built once from the store, never changed."""

    model_config = ConfigDict(frozen=True)


# ---- tickets ---------------------------------------------------------------------------------


class TicketSummary(View):
    """One row of `ticket list`: where a ticket stands, and what it cost so far."""

    id: int
    kind: str
    title: str
    lane: int
    sensitive: bool
    status: str
    phase: str | None  # the current phase; None once the route is finished
    phases_done: int
    phases_total: int
    attempts: int  # attempts used over all phases
    parent_id: int | None
    tokens: int  # input + output tokens of every call, failed ones included
    cost: float | None  # USD of the calls with a known price; None: every price is unknown
    cost_text: str  # `$0.12`, `unknown` or `$0.12 + unknown`
    unknown_price_calls: int
    handoff_reason: str | None
    # Whether the ticket's change reached its target (merged, or a pull request opened). None:
    # its route has no code phase. False once done: its code phases ran text-only (no judge),
    # and nothing was written to the repository: `ticket list` shows "done (text only)".
    code_applied: bool | None
    created_at: Timestamp
    updated_at: Timestamp


class VerdictView(View):
    passed: bool
    source: str  # checks, validator, error, judge or human
    objections: list[str]


class JudgeRunView(View):
    """One run of the judge (or the tests command) for an attempt; its full log is a file."""

    purpose: str  # preflight, tests, judge or merge
    command: str
    commit: str | None  # the tree judged
    exit_code: int
    timed_out: bool
    duration_s: float
    log_path: str

    @property
    def green(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


class ContextFileView(View):
    """A repository file a prompt showed: whole, or as its symbol outline."""

    path: str
    mode: str  # whole | outline
    tokens: int


class ContextMapView(View):
    files: int  # files listed, each with its top-level symbols
    symbols: int
    tokens: int
    left_out: int  # lower-ranked files cut to fit the budget


class ContextView(View):
    """The repository context an attempt's prompt got (docs/phases.md, Repository context)."""

    source: str | None  # "main at 3f2a1b0c9d", "the ticket's worktree at …"; None: no repo
    reason: str | None  # why it is empty: not a git repository, no room in the budget, …
    room: int  # the tokens it was allowed
    tokens: int  # the tokens it took
    map: ContextMapView
    files: list[ContextFileView]
    cut: list[str]  # wanted files shown as an outline or left out

    @classmethod
    def of(cls, record: object) -> ContextView | None:
        """The view of an attempt's stored record; None for none (or one it cannot read)."""
        if not isinstance(record, dict):
            return None
        try:
            return cls.model_validate(record)
        except ValueError:  # pydantic's ValidationError: a record written by another version
            return None


class AttemptView(View):
    number: int
    worker: str  # the lease owner, or "human" for `approve`
    truncated: bool  # the prompt was cut to fit its budget
    chars: int
    created_at: Timestamp
    verdict: VerdictView | None  # None: not judged yet
    # What became of it, in words: passed, accepted with red CI → fix-ci, rejected, approved
    # by a human, approval refused, awaiting verdict, or no verdict (handed off).
    state: str
    # Each judge in turn: `checks ok · judge red (exit 1, 2.1 s) · validator passed`.
    account: str
    judge_runs: list[JudgeRunView]
    context: ContextView | None  # None: the phase declares no repository context


class PhaseView(View):
    phase: str
    deliverable: str
    status: str
    attempts_used: int
    attempts_allowed: int
    started_at: Timestamp | None
    finished_at: Timestamp | None
    seconds: float | None
    tokens_in: int
    tokens_out: int
    cost: float | None
    cost_text: str
    models: list[str]  # provider/model pairs
    note: str | None  # the latest `retry --note`
    origin: str | None  # an inserted step: "ci" (red CI) or "merge"; else None
    attempts: list[AttemptView]


class CallView(View):
    phase: str
    role: str
    attempt: int
    provider: str
    model: str
    tier: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    latency_ms: float
    cost: float | None
    fallback: bool
    error: str | None
    estimated: bool  # never settled (its worker died in flight): tokens and cost are guesses


class EventView(View):
    at: Timestamp
    kind: str
    message: str


class ChildView(View):
    id: int
    title: str
    status: str
    key: str | None  # the child's key in children.json


class MergeView(View):
    """Where a ticket's work went: the target and commit, or the pull request."""

    target: str
    commit: str
    mode: str
    url: str | None
    at: Timestamp


class TicketDetail(TicketSummary):
    """Everything `ticket show` prints: phases, attempts, verdicts, calls, events."""

    body: str
    route: list[str]
    children: list[ChildView]
    depends_on: list[int]
    merge: MergeView | None
    # The objections of the current phase's last judged attempt, while the ticket waits on a
    # human after it (the phase used its attempts, or a human's approval was refused).
    last_objections: list[str]
    phases: list[PhaseView]
    calls: list[CallView]
    events: list[EventView]


# ---- costs -----------------------------------------------------------------------------------


class CostLine(View):
    """Calls, tokens and cost of one group (or of the total)."""

    key: str
    calls: int
    errors: int
    fallbacks: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float | None  # the known sum; None when every priced call is unknown
    unknown_price_calls: int
    estimated_calls: int  # calls that never settled: their tokens are an estimate
    estimated_usd: float  # their estimated cost, not in cost_usd
    cost: str  # `$0.12`, `unknown` or `$0.12 + unknown`, then ` + ~$0.01 estimated`


class CostReport(View):
    """`shipline cost`: the calls table, for one ticket or all, grouped `by` (None: total)."""

    by: GroupBy | None
    ticket: int | None
    groups: list[CostLine]
    total: CostLine


# ---- worktrees -------------------------------------------------------------------------------


class WorkspaceView(View):
    """One folder under the worktree root."""

    ticket: str  # the folder's name: a ticket id, or anything for a foreign folder
    ticket_status: str  # "unknown" when no ticket has that id
    state: WorkspaceState  # ok, broken, orphan or foreign
    branch: str | None
    path: Path
    disk_bytes: int
    last_used: Timestamp


class WorkspaceList(View):
    """`shipline workspaces`: what is there now, and what `--prune` removed first."""

    workspaces: list[WorkspaceView]
    removed: list[WorkspaceView]


# ---- commands ------------------------------------------------------------------------------


class Approval(View):
    """`shipline approve`: the ticket's new status; `then`, when a worker applies the approval
    (a code phase, or the last step of a route that merges), says what it will do."""

    ticket_id: int
    status: str
    then: str | None


class DetectedTestCommand(View):
    """A test command `shipline init` found in the repository, and the file that says so."""

    tool: str  # make, pytest, go, cargo, npm
    command: str
    evidence: str


class ProjectSetup(View):
    """`shipline init`: the config file (written now, or kept) and the store it points at."""

    config: Path
    created: bool  # False: an existing shipline.toml was kept, unchanged
    store_url: str  # as shown to a human (no password)
    judge: str  # [judge] command in effect ("" none: code phases are judged on text alone)
    target: str  # [merge] target in effect
    detected: list[DetectedTestCommand]  # every test command found, the preferred first
    notes: list[str]  # the repository's git state, when it needs the user
    missing: list[str]  # sections a kept shipline.toml lacks (init does not add them)
    suggestion: str  # their TOML, to add by hand


# ---- the demo --------------------------------------------------------------------------------


class DemoTicket(TicketSummary):
    reached: list[str]  # phases with at least one attempt
    objections: int  # over all verdicts
    seconds: float


class DemoCommit(View):
    """A ticket's squashed commit on the sample repo's main branch."""

    ticket: int
    sha: str
    subject: str


class DemoReport(View):
    dir: Path
    replay: bool
    seconds: float
    tickets: list[DemoTicket]
    judge: str  # the sample's [judge] command; "" when pytest is not installed with shipline
    target: str  # the branch tickets merge into
    commits: list[DemoCommit]  # merged tickets, in merge order
    target_green: bool | None  # the judge on the target after the run (None: no judge)


__all__ = [
    "Approval",
    "AttemptView",
    "CallView",
    "ChildView",
    "CostLine",
    "CostReport",
    "DemoCommit",
    "DemoReport",
    "DemoTicket",
    "DetectedTestCommand",
    "EventView",
    "JudgeRunView",
    "MergeView",
    "PhaseRoute",
    "PhaseView",
    "ProjectSetup",
    "RoleRoute",
    "RouteExplanation",
    "TicketDetail",
    "TicketSummary",
    "VerdictView",
    "View",
    "WorkspaceList",
    "WorkspaceView",
]
