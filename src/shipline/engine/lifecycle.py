"""The lifecycle of tickets and steps: every state change is decided here and applied here.

A decision is a pure function: facts go in (an attempt's verdict and what the claim knows of
its step, a human's move and the ticket's status, an epic's children) and a frozen
`Transition` comes out: the step's new status, the ticket's, a move of its position, an
inserted step, a handoff, the events for its history, and whether to create the epic's
children, to finish, or to settle the epic. `apply` writes a transition inside the caller's
transaction: a worker's, fenced by the step's lease, or a human's move. The per-step
transitions run on prebuilt Core statements (engine/sql.py); only an epic's split, which
creates its children, uses the ORM. Besides creating a ticket (engine/tickets.py) and taking
a step's lease (engine/worker.py), nothing else writes a status, and `apply` is the one way
to done.

    queued ──claim──> running ──passed──> queued (the next phase, or an inserted fix-ci)
                              ├─rejected─> queued (another attempt)
                              ├─last phase passed─> done, or waiting-children (a split)
                              └─attempts used up, or the engine cannot go on─> needs-human
    needs-human ──approve──> queued | waiting-children | done;  ──retry──> queued
        (approving a code phase under a judge, or the last step of a route that merges,
         queues the step: a worker applies the approval, judges it and lands the ticket;
         a red judge or a conflict refuses it ──> needs-human)
    waiting-children ──all children done──> done;  ──all ended, some cancelled──> needs-human
    any status but done ──cancel──> cancelled (an epic's unfinished children too)
    not ended, locks held, no live worker ──tests unlock──> queued (the tests phase again)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from shipline.config import Settings
from shipline.engine import sql
from shipline.engine.code import CODE_PHASES, CodePath, WorktreeState
from shipline.engine.tickets import NewTicket, add_ticket, current_step, get_ticket
from shipline.engine.verdict import strip_fence
from shipline.errors import TicketError
from shipline.phases import get_phase
from shipline.store import models as m
from shipline.store.db import Store
from shipline.store.models import StepOrigin, StepStatus, TicketStatus

EventLine = tuple[str, str]  # (kind, message): one line of a ticket's history

DONE_EVENT: EventLine = ("done", "all phases accepted")
HUMAN = "human"  # the worker of an attempt a human approved


# --- what goes in ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FollowUp:
    """Work an accepted code attempt leaves for fix-ci: red CI after implement, or a merge that
    found a conflict or a red judge (fix-ci gets one try at those)."""

    origin: StepOrigin
    context: str  # the failure, handed to fix-ci as its ci.log
    conflict: bool = False  # a failed merge: a conflict (else a red judge after the rebase)

    @property
    def why(self) -> str:
        if self.origin == StepOrigin.MERGE:
            kind = "a conflict" if self.conflict else "a red judge"
            return f"the merge found {kind}: fix-ci starts"
        return "CI is red after implement: fix-ci starts"


@dataclass(frozen=True, slots=True)
class AttemptVerdict:
    """What the loop concluded about one attempt: passed when there are no objections."""

    number: int
    objections: tuple[str, ...] = ()
    source: str = "checks"  # checks | judge | validator | error
    followup: FollowUp | None = None
    events: tuple[EventLine, ...] = ()  # what the attempt's judge reported, written first
    approved: bool = False  # a human's approval that a worker applied (objections refuse it)

    @property
    def passed(self) -> bool:
        return not self.objections


@dataclass(frozen=True, slots=True)
class StepFacts:
    """What a claim knows of its step and ticket: all a verdict's transition depends on."""

    phase: str
    lane: int
    last: bool  # the last step of the ticket's route
    parent: bool  # the ticket is an epic's child
    attempts_used: int  # before this attempt
    attempts_allowed: int

    @property
    def split(self) -> bool:
        return self.phase == "split"


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What a human's move depends on: the ticket's status and its current step."""

    id: int
    status: str
    phase: str | None  # the current step's phase; None past the route's end (a settled epic)
    last: bool
    parent: bool
    code: bool = False  # the phase changes code under a judge (tests, implement, fix-ci)
    merges: bool = False  # the route ends in the merge queue (a judge, and code phases)

    @property
    def split(self) -> bool:
        return self.phase == "split"

    @property
    def applied(self) -> bool:
        """An approval must be applied by a worker (judged, and landed after the last step)
        rather than recorded as it stands."""
        return self.code or (self.last and self.merges)


# --- what comes out -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Close:
    """The current step's verdict: its new status, and whether the attempt counts, is
    accepted as the deliverable, and ends the step."""

    status: StepStatus
    used: int = 0
    accept: bool = False
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Reopen:
    """A human's retry: the step is pending again with `more` attempts beyond those used."""

    more: int
    note: str | None = None


@dataclass(frozen=True, slots=True)
class NewStep:
    """A step the route did not list, inserted right after the current one."""

    phase: str
    origin: StepOrigin
    context: str


@dataclass(frozen=True, slots=True)
class Restart:
    """Steps appended after the ticket's last step, which it moves to: `phases` run again
    (the first with `note` in its context). The earlier steps stay, with their history."""

    phases: tuple[str, ...]
    note: str


@dataclass(frozen=True, slots=True)
class Transition:
    step: Close | Reopen | None = None  # the current step
    skip_steps: bool = False  # cancel: open steps are skipped, every lease released
    status: TicketStatus | None = None  # the ticket's new status (None: as it is)
    move: int = 0  # how far the ticket's position moves on
    insert: NewStep | None = None
    restart: Restart | None = None  # tests unlock: the tests phase and those after it again
    handoff: str | None = None  # the ticket goes to needs-human, for this reason
    events: tuple[EventLine, ...] = ()
    children: bool = False  # create the epic's children from the accepted children.json
    finish: bool = False  # the ticket is done
    settle: bool = False  # the ticket ended: its epic may be done, or need a human
    summary: str = ""  # the one line a worker reports

    def __post_init__(self) -> None:
        if self.status in (TicketStatus.DONE, TicketStatus.NEEDS_HUMAN):
            raise ValueError(f"status {self.status} is reached by finish or handoff only")

    @property
    def ends_in(self) -> TicketStatus | None:
        """The ticket's status after this transition (None: unchanged)."""
        if self.finish:
            return TicketStatus.DONE
        if self.handoff is not None:
            return TicketStatus.NEEDS_HUMAN
        return self.status


@dataclass(frozen=True, slots=True)
class Target:
    """Where a transition applies. With `token`, the step's write is fenced by its lease."""

    ticket_id: int
    step_id: int | None = None
    token: str | None = None
    parent_id: int | None = None


# --- decisions (pure) -----------------------------------------------------------------------


# The step closes a verdict can leave (constants: a verdict is decided on every step).
ACCEPTED = Close(StepStatus.PASSED, used=1, accept=True, finished=True)
REJECTED = Close(StepStatus.PENDING, used=1)
EXHAUSTED = Close(StepStatus.FAILED, used=1, finished=True)
UNJUDGED = Close(StepStatus.PENDING)  # a handoff: the attempt does not count
APPROVED = Close(StepStatus.APPROVED, accept=True, finished=True)


def _advance(
    close: Close, last: bool, split: bool, parent: bool, events: tuple[EventLine, ...], lead: str
) -> Transition:
    """Past an accepted step: the next phase, the epic's children, or done."""
    if not last:
        status = TicketStatus.QUEUED
        return Transition(close, status=status, move=1, events=events, summary=f"{lead} → {status}")
    if split:
        status = TicketStatus.WAITING
        return Transition(
            close, status=status, move=1, children=True, events=events, summary=f"{lead} → {status}"
        )
    return Transition(
        close,
        move=1,
        finish=True,
        settle=parent,
        events=(*events, DONE_EVENT),
        summary=f"{lead} → {TicketStatus.DONE}",
    )


def _fix_ci(
    close: Close, followup: FollowUp, events: Sequence[EventLine], summary: str
) -> Transition:
    """An accepted step that leaves work for fix-ci (red CI, a failed merge): fix-ci is next."""
    return Transition(
        close,
        status=TicketStatus.QUEUED,
        move=1,
        insert=NewStep("fix-ci", followup.origin, followup.context),
        events=(*events, ("fix-ci", followup.why)),
        summary=summary,
    )


def decide_verdict(facts: StepFacts, verdict: AttemptVerdict) -> Transition:
    """A judged attempt: the next phase (or fix-ci), another attempt, or a human's turn."""
    if verdict.approved:
        return _decide_applied(facts, verdict)
    name, number, source = facts.phase, verdict.number, verdict.source
    if verdict.passed:
        followup = verdict.followup
        if followup is not None and followup.origin == StepOrigin.CI:  # never "passed"
            line = f"{name} attempt {number}: accepted with red CI ({source}; the judge is red)"
            summary = f"{name} accepted with red CI on attempt {number} → fix-ci"
            return _fix_ci(ACCEPTED, followup, (*verdict.events, ("passed", line)), summary)
        events = (*verdict.events, ("passed", f"{name} attempt {number}: passed ({source})"))
        lead = f"{name} passed on attempt {number}"
        if followup is None:
            return _advance(ACCEPTED, facts.last, facts.split, facts.parent, events, lead)
        return _fix_ci(ACCEPTED, followup, events, f"{lead}, but {followup.why}")
    objections = verdict.objections
    used = facts.attempts_used + 1
    counted = f"{name} attempt {number}: {len(objections)} objection(s) ({source})"
    if used >= facts.attempts_allowed:
        reason = (
            f"{name} used {used}/{facts.attempts_allowed} attempts; "
            "remaining objections: " + "; ".join(objections)
        )
        return Transition(
            EXHAUSTED,
            handoff=reason,
            # the handoff reason repeats the objections; a rejected attempt's event lists them
            events=(*verdict.events, ("failed", counted), ("handoff", reason)),
            summary=f"{name} failed attempt {number} → {TicketStatus.NEEDS_HUMAN}",
        )
    return Transition(
        REJECTED,
        status=TicketStatus.QUEUED,
        events=(*verdict.events, ("failed", f"{counted}: " + "; ".join(objections))),
        summary=f"{name} attempt {number} rejected: {objections[0]}",
    )


def _decide_applied(facts: StepFacts, verdict: AttemptVerdict) -> Transition:
    """A human's approval, applied by a worker: it stands when the judge (and the merge)
    agree; a red judge, a conflict or a locked test changed refuses it, and the human decides
    again. The attempt never counts."""
    name, number, source = facts.phase, verdict.number, verdict.source
    if verdict.passed:
        line = f"{name} attempt {number}: approved by a human and applied"
        events = (*verdict.events, ("passed", line))
        lead = f"{name} approved and applied"
        if verdict.followup is None:
            return _advance(APPROVED, facts.last, facts.split, facts.parent, events, lead)
        return _fix_ci(APPROVED, verdict.followup, events, f"{lead}, but {verdict.followup.why}")
    reason = f"{name}: the approval is refused ({source}): " + "; ".join(verdict.objections)
    return Transition(
        UNJUDGED,
        handoff=reason,
        events=(
            *verdict.events,
            ("refused", f"{name} attempt {number}: the approval is refused ({source})"),
            ("handoff", reason),
        ),
        summary=f"{name}: the approval is refused → {TicketStatus.NEEDS_HUMAN}",
    )


def decide_handoff(reason: str, events: Sequence[EventLine] = ()) -> Transition:
    """The attempt could not be judged (a provider chain, a budget, a worktree, a failed merge):
    the step stays pending, the attempt does not count, and a human decides."""
    return Transition(
        UNJUDGED,
        handoff=reason,
        events=(*events, ("handoff", reason)),
        summary=reason,
    )


def decide_claim(phase: str, worker_id: str, *, resumed: bool, first: bool) -> Transition:
    """A worker claimed the ticket's current step."""
    if resumed:
        line = f"{phase}: taken over by {worker_id} after a lost worker's lease expired"
        return Transition(status=TicketStatus.RUNNING, events=(("resumed", line),))
    if first:
        line = f"{phase}: started by {worker_id}"
        return Transition(status=TicketStatus.RUNNING, events=(("started", line),))
    return Transition(status=TicketStatus.RUNNING)


def _waiting_for_human(facts: TicketFacts, what: str) -> str:
    """The phase a human may approve or retry; a clear error from any other status."""
    if facts.status != TicketStatus.NEEDS_HUMAN:
        raise TicketError(f"ticket #{facts.id} is {facts.status}, not needs-human")
    if facts.phase is None:
        raise TicketError(f"ticket #{facts.id} has no phase {what}")
    return facts.phase


def decide_approve(
    facts: TicketFacts, worktree: WorktreeState | None = None, *, edited: bool = False
) -> Transition:
    """A human accepts the waiting phase's deliverable (as it stands, or as they `edited` it).

    A text phase is accepted as it is. A code phase under a judge, or the last step of a route
    that merges, is queued instead: a worker applies the approval (the attempt's file blocks,
    the edited text, or the human's commit on the ticket's branch), runs the judge and lands
    the ticket. Refused at once, with what to do, when the `worktree` says it cannot work:
    uncommitted changes of the human's (they would be lost), or unresolved conflicts in what
    would be approved.
    """
    phase = _waiting_for_human(facts, "waiting for approval")
    if not facts.applied:
        approved = (("approved", f"{phase}: accepted by a human"),)
        lead = f"{phase} approved"
        return _advance(APPROVED, facts.last, facts.split, facts.parent, approved, lead)
    refusal = approval_refusal(facts, worktree, edited=edited)
    if refusal is not None:
        raise TicketError(f"approve refused: {refusal}")
    commit = worktree.commit if worktree is not None else None
    if facts.code:
        what = (
            f"your commit {commit[:10]} on branch {worktree.branch}"
            if worktree is not None and commit
            else ("your text" if edited else "the last attempt")
        )
        work = f"applies {what} and runs the judge"
        if facts.last and facts.merges:
            work = f"applies {what}, runs the judge, then lands the ticket on its target"
    else:
        work = "lands the ticket on its target (the judge runs first)"
        if worktree is not None and commit:
            work += f", your commit {commit[:10]} included"
    line = f"{phase}: approved by a human; the next worker {work}"
    return Transition(
        UNJUDGED,
        status=TicketStatus.QUEUED,
        events=(("approved", line),),
        summary=f"the next worker (`shipline run` or `work`) {work}",
    )


def approval_refusal(
    facts: TicketFacts, worktree: WorktreeState | None, *, edited: bool
) -> str | None:
    """Why an approval that a worker would apply cannot work as the worktree stands, with what
    to do; None when it can."""
    if worktree is None:
        return None
    where = f"the worktree {worktree.path} (branch {worktree.branch})"
    if worktree.edited:
        return (
            f"{where} has uncommitted changes in {', '.join(worktree.edited)}: commit them on "
            f"the branch (approve then takes your commit), or discard them, and approve again"
        )
    if edited:
        if facts.code and worktree.commit:
            return (
                f"{where} has your commit {worktree.commit[:10]}, and --file gives another "
                "text: approve without --file to take the commit, or reset the branch to the "
                "commit shipline left, to approve the file"
            )
        return None  # the file is applied on the step's base: what the attempt left is replaced
    whose = (
        f"your commit {worktree.commit[:10]}"
        if worktree.commit
        else "the last attempt, as it was applied there"
    )
    if worktree.unmerged:
        return (
            f"{where} holds a merge with unmerged paths {', '.join(worktree.unmerged)} "
            f"({whose}): resolve them, commit on the branch, then approve again (approve "
            "takes your commit), or approve --file with a resolved version"
        )
    if worktree.markers:
        return (
            f"conflict markers remain in {', '.join(worktree.markers)} ({whose}, in {where}): "
            "resolve them, commit on the branch, then approve again (approve takes your "
            "commit), or approve --file with a resolved version"
        )
    return None


def decide_retry(
    facts: TicketFacts, attempts: int, note: str | None, worktree: WorktreeState | None = None
) -> Transition:
    """A human gives the waiting phase more attempts, with a note for its context. Refused
    when the human's own work in the ticket's worktree would be discarded by it."""
    phase = _waiting_for_human(facts, "to retry")
    if facts.applied and worktree is not None and worktree.touched:
        theirs = (
            f"your commit {worktree.commit[:10]}"
            if worktree.commit
            else f"your uncommitted changes in {', '.join(worktree.edited)}"
        )
        raise TicketError(
            f"retry refused: the worktree {worktree.path} (branch {worktree.branch}) has "
            f"{theirs}, and a retry starts {phase} over from its base, discarding it. "
            f"`shipline approve {facts.id}` takes a commit (commit your changes first); to "
            "retry anyway, reset the branch to the commit shipline left"
            + (
                f" (`git -C {worktree.path} reset --hard {worktree.left[:12]}`)"
                if worktree.left
                else ""
            )
        )
    line = f"{phase}: {attempts} more attempt(s)" + (f", note: {note}" if note else "")
    return Transition(
        Reopen(attempts, note or None), status=TicketStatus.QUEUED, events=(("retry", line),)
    )


def decide_cancel(facts: TicketFacts) -> Transition:
    """A human ends a ticket that has not ended yet."""
    if facts.status in m.FINAL_STATUSES:
        raise TicketError(f"ticket #{facts.id} is already {facts.status}")
    return Transition(
        skip_steps=True,
        status=TicketStatus.CANCELLED,
        events=(("cancelled", "cancelled by a human"),),
        settle=facts.parent,
    )


@dataclass(frozen=True, slots=True)
class UnlockFacts:
    """What lifting a ticket's test locks depends on."""

    id: int
    status: str
    held: bool  # its current step is claimed under a lease that has not expired
    paths: tuple[str, ...]  # the locked test files
    test_ids: tuple[str, ...]  # their locked pytest ids
    config: int  # how many test configuration paths are locked
    steps: tuple[tuple[str, str | None], ...]  # (phase, origin) of every step, by position
    position: int


def decide_unlock(facts: UnlockFacts, reason: str) -> Transition:
    """A human says the locked tests are wrong: the locks are lifted (the caller deletes them)
    and the tests phase runs again from its start, then the phases after it, as new steps."""
    why = " ".join(reason.split())
    if not why:
        raise TicketError("--reason is required: say why the locked tests are wrong")
    if facts.status in m.FINAL_STATUSES:
        raise TicketError(f"ticket #{facts.id} is {facts.status}: its locks are history now")
    if not (facts.paths or facts.test_ids or facts.config):
        raise TicketError(f"ticket #{facts.id} has no locked tests to unlock")
    if facts.held:
        raise TicketError(
            f"ticket #{facts.id}'s step is held by a live worker: wait until it finishes (or "
            "stop that worker), then unlock"
        )
    tests_at = max((i for i, (phase, _) in enumerate(facts.steps) if phase == "tests"), default=-1)
    if tests_at < 0:
        raise TicketError(f"ticket #{facts.id} has no tests phase to run again")
    again = tuple(phase for phase, origin in facts.steps[tests_at:] if origin is None)
    ids = (
        f" ({len(facts.test_ids)} test id(s): {', '.join(facts.test_ids)})"
        if facts.test_ids
        else ""
    )
    line = (
        f"tests unlocked by a human: {why}. Lifted: {', '.join(facts.paths) or 'no test file'}"
        f"{ids}, and {facts.config} test configuration lock(s). Runs again: {' → '.join(again)}"
    )
    return Transition(
        skip_steps=True,
        status=TicketStatus.QUEUED,
        move=len(facts.steps) - facts.position,
        restart=Restart(again, f"The locked tests were unlocked by a human: {why}"),
        events=(("unlocked", line),),
        summary=f"tests unlocked → {TicketStatus.QUEUED}",
    )


def decide_blocked(blockers: Sequence[int]) -> Transition:
    """A ticket depends on cancelled tickets, so it can never start: a human decides."""
    reason = "depends on " + ", ".join(f"#{b}" for b in blockers) + ", cancelled"
    return Transition(handoff=reason, events=(("handoff", reason),))


def decide_settlement(
    status: str, children: Sequence[tuple[int, str]], *, parent: bool
) -> Transition | None:
    """An epic waiting on its children (id, status) is done when all are done; when all have
    ended and some were cancelled, a human decides. None: nothing to do yet."""
    if status != TicketStatus.WAITING:
        return None
    if all(s == TicketStatus.DONE for _, s in children):
        return Transition(finish=True, settle=parent, events=(DONE_EVENT,))
    if all(s in m.FINAL_STATUSES for _, s in children):
        cancelled = ", ".join(f"#{i}" for i, s in children if s == TicketStatus.CANCELLED)
        reason = f"children {cancelled} were cancelled"
        return Transition(handoff=reason, events=(("handoff", reason),))
    return None


# --- applying a transition --------------------------------------------------------------------


def apply(
    conn: Connection,
    target: Target,
    t: Transition,
    now: datetime,
    *,
    text: str | None = None,
    settings: Settings | None = None,
) -> bool:
    """Write `t` in the caller's transaction. False, with nothing written, when the target is
    fenced (`target.token`) and the step is no longer leased to it: the caller backs off.

    `text` is the attempt accepted by a `Close` (and the children.json of a split);
    `settings` is needed to insert a step or to create an epic's children.
    """
    tid = target.ticket_id
    step = t.step
    if step is not None and target.step_id is None:
        raise ValueError("a transition of a step needs the step's id")
    if isinstance(step, Close):
        params = {
            "sid": target.step_id,
            "new_status": step.status,
            "used": step.used,
            "accepted": text if step.accept else None,
            "finished": now if step.finished else None,
        }
        if target.token is None:
            conn.execute(sql.SET_STEP, params)
        elif conn.execute(sql.CLOSE_STEP, {**params, "token": target.token}).rowcount != 1:
            return False
    elif isinstance(step, Reopen):
        conn.execute(sql.REOPEN_STEP, {"sid": target.step_id, "more": step.more, "note": step.note})
    if t.skip_steps:
        conn.execute(sql.SKIP_STEPS, {"tid": tid})
    sql.add_events(conn, tid, t.events, now)
    if t.finish:  # the one way to done
        conn.execute(sql.FINISH_TICKET, {"tid": tid, "move": t.move, "now": now})
    elif t.handoff is not None:
        conn.execute(sql.HAND_OFF, {"tid": tid, "reason": t.handoff, "now": now})
    elif t.status == TicketStatus.CANCELLED:
        conn.execute(sql.CANCEL_TICKET, {"tid": tid, "now": now})
    elif t.status is not None:
        conn.execute(
            sql.SET_TICKET, {"tid": tid, "new_status": t.status, "move": t.move, "now": now}
        )
    if t.insert is not None:
        _insert(conn, target, t.insert, _needs(settings))
    if t.restart is not None:
        needs = _needs(settings)
        attempts = [needs.phase(phase).max_attempts for phase in t.restart.phases]
        sql.append_steps(conn, tid, t.restart.phases, attempts, t.restart.note)
    if t.children:
        assert text is not None
        _split(conn, tid, text, _needs(settings), now)
    if t.settle and target.parent_id is not None:
        _settle(conn, target.parent_id, now)
    return True


def _needs(settings: Settings | None) -> Settings:
    if settings is None:
        raise ValueError("this transition needs the project's settings")
    return settings


def _insert(conn: Connection, target: Target, new: NewStep, settings: Settings) -> None:
    position = conn.execute(sql.STEP_POSITION, {"sid": target.step_id}).scalar_one()
    sql.insert_step(
        conn,
        target.ticket_id,
        int(position),
        new.phase,
        attempts_allowed=settings.phase(new.phase).max_attempts,
        origin=new.origin,
        context=new.context,
    )


def _split(conn: Connection, epic_id: int, text: str, settings: Settings, now: datetime) -> None:
    """Rare: the ORM creates the children, in a session of its own on the caller's connection,
    opened after the Core writes above, so it reads them."""
    with Session(bind=conn, expire_on_commit=False) as session:
        created = create_children(session, get_ticket(session, epic_id), text, settings)
        session.flush()
    sql.add_events(conn, epic_id, [("split", f"created child tickets {created}")], now)


def _settle(conn: Connection, epic_id: int, now: datetime) -> None:
    """One of the epic's children ended: settle the epic, if it waits on them."""
    epic = conn.execute(sql.TICKET_STATE, {"tid": epic_id}).one()
    children = [(int(c.id), str(c.status)) for c in conn.execute(sql.CHILDREN, {"tid": epic_id})]
    t = decide_settlement(epic.status, children, parent=epic.parent_id is not None)
    if t is not None:
        apply(conn, Target(epic_id, parent_id=epic.parent_id), t, now)


def create_children(session: Session, epic: m.Ticket, text: str, settings: Settings) -> list[int]:
    """Create the epic's children from children.json, once: an existing key is reused."""
    data = json.loads(strip_fence(text))
    ids: dict[str, int] = {}
    for child in data["children"]:
        key = str(child["key"])
        existing = session.scalars(
            select(m.Ticket).where(m.Ticket.parent_id == epic.id, m.Ticket.child_key == key)
        ).first()
        if existing is None:
            existing = add_ticket(
                session,
                settings,
                NewTicket(
                    kind=child["kind"],
                    title=child["title"],
                    body=child.get("body", ""),
                    lane=epic.lane,
                    sensitive=epic.sensitive,
                    parent_id=epic.id,
                    child_key=key,
                ),
            )
        ids[key] = existing.id
    for child in data["children"]:
        for dep in child.get("depends_on", []):
            pair = (ids[str(child["key"])], ids[str(dep)])
            if session.get(m.Dependency, pair) is None:
                session.add(m.Dependency(ticket_id=pair[0], depends_on_id=pair[1]))
    return list(ids.values())


# --- the human's moves ------------------------------------------------------------------------


def _ticket_facts(ticket: m.Ticket, settings: Settings | None = None) -> TicketFacts:
    step = current_step(ticket)
    judged = settings is not None and bool(settings.judge.command.strip())
    return TicketFacts(
        id=ticket.id,
        status=ticket.status,
        phase=step.phase if step is not None else None,
        last=ticket.position == len(ticket.steps) - 1,
        parent=ticket.parent_id is not None,
        code=judged and step is not None and step.phase in CODE_PHASES,
        merges=judged and any(phase in CODE_PHASES for phase in ticket.route),
    )


def _worktree(
    store: Store, settings: Settings, repo: Path | None, ticket_id: int
) -> WorktreeState | None:
    """The ticket's worktree as a human may have left it (read before the transaction)."""
    if repo is None:
        return None
    code = CodePath(settings, repo, store)
    return code.inspect(ticket_id) if code.enabled else None


def approved_commit(worktree: WorktreeState) -> str:
    """The approval of a human's commit, as the code path reads it (engine/code.py)."""
    assert worktree.commit is not None
    return (
        f"A human's change, approved with `shipline approve`: the commit below, on branch "
        f"{worktree.branch}.\n\nCommit: {worktree.commit}\n"
    )


def approve(
    store: Store,
    settings: Settings,
    ticket_id: int,
    text: str | None = None,
    *,
    repo: Path | None = None,
) -> tuple[str, str | None]:
    """Accept the current phase's deliverable as it stands (or as the human edited it), or,
    when a worker must apply it (decide_approve), queue it for one. `repo`: the project's
    repository, whose ticket worktree is looked at first. Returns the ticket's status after
    it, and, when a worker applies the approval, what it will do."""
    worktree = _worktree(store, settings, repo, ticket_id)
    with store.transaction() as conn:
        with store.orm(conn) as session:  # read only, and closed before the writes
            ticket = get_ticket(session, ticket_id)
            facts = _ticket_facts(ticket, settings)
            t = decide_approve(facts, worktree, edited=text is not None)
            step = current_step(ticket)
            assert step is not None
            if text is None and facts.code and worktree is not None and worktree.commit:
                text = approved_commit(worktree)
            if text is None:
                if not step.attempts:
                    hint = "commit your change in its worktree, or " if facts.code else ""
                    raise TicketError(
                        f"nothing to approve: phase {step.phase} of #{ticket_id} has no attempt; "
                        f"{hint}use `shipline retry` or `shipline approve --file`"
                    )
                text = step.attempts[-1].text
            phase = get_phase(step.phase)
            if phase.output == "json":  # children.json is acted on, so it must be well formed
                inputs = {
                    get_phase(s.phase).deliverable: s.deliverable
                    for s in ticket.steps
                    if s.position < step.position and s.deliverable is not None
                }
                problems = phase.check(text, inputs)
                if problems:
                    raise TicketError(
                        f"{phase.deliverable} cannot be approved as it is: " + "; ".join(problems)
                    )
            number = max((a.number for a in step.attempts), default=0) + 1
            target = Target(ticket_id, step.id, parent_id=ticket.parent_id)
        now = m.utcnow()
        inserted = conn.execute(
            sql.INSERT_ATTEMPT,
            {
                "step_id": target.step_id,
                "number": number,
                "text": text,
                "prompt": [],
                "worker": HUMAN,
                "truncated": False,
                "created_at": now,
            },
        ).inserted_primary_key
        assert inserted is not None
        if not facts.applied:  # else the worker that applies it gives its verdict
            conn.execute(
                sql.INSERT_VERDICT,
                {
                    "attempt_id": inserted[0],
                    "passed": True,
                    "source": "human",
                    "objections": [],
                    "created_at": now,
                },
            )
        apply(conn, target, t, now, text=text, settings=settings)
    assert t.ends_in is not None
    return t.ends_in, (t.summary if facts.applied else None)


def retry(
    store: Store,
    ticket_id: int,
    note: str | None,
    attempts: int,
    *,
    settings: Settings | None = None,
    repo: Path | None = None,
) -> None:
    """Give the current phase `attempts` more tries, with the human's note in its context.
    With `settings` and `repo`, the ticket's worktree is looked at first (decide_retry)."""
    if attempts < 1:
        raise TicketError(f"--attempts must be >= 1 (got {attempts})")
    worktree = _worktree(store, settings, repo, ticket_id) if settings is not None else None
    with store.transaction() as conn:
        with store.orm(conn) as session:
            ticket = get_ticket(session, ticket_id)
            t = decide_retry(_ticket_facts(ticket, settings), attempts, note, worktree)
            step = current_step(ticket)
            assert step is not None
            target = Target(ticket_id, step.id)
        apply(conn, target, t, m.utcnow())


def cancel(store: Store, ticket_id: int) -> list[int]:
    """End a ticket (and, for an epic, its unfinished children). Returns the ids cancelled.

    A ticket that depends on a cancelled one could never start: it goes to a human. A
    cancelled child may leave its epic with nothing to wait for: the epic is settled.
    """
    with store.transaction() as conn:
        moves: list[tuple[Target, Transition]] = []
        with store.orm(conn) as session:
            pending = [get_ticket(session, ticket_id)]
            while pending:
                current = pending.pop()
                if current.status in m.FINAL_STATUSES and moves:
                    continue  # the ticket itself gets a clear error from decide_cancel
                target = Target(current.id, parent_id=current.parent_id)
                moves.append((target, decide_cancel(_ticket_facts(current))))
                pending.extend(
                    session.scalars(
                        select(m.Ticket)
                        .where(m.Ticket.parent_id == current.id)
                        .order_by(m.Ticket.id)
                    )
                )
        now = m.utcnow()
        for target, t in moves:
            apply(conn, target, t, now)
        cancelled = [target.ticket_id for target, _ in moves]
        blocked: dict[int, set[int]] = {}
        for dependent, blocker in conn.execute(sql.DEPENDENTS, {"ids": cancelled}):
            blocked.setdefault(dependent, set()).add(blocker)
        for dependent, blockers in blocked.items():
            t = decide_blocked([b for b in cancelled if b in blockers])
            apply(conn, Target(dependent), t, now)
        return cancelled


@dataclass(frozen=True)
class Unlocked:
    """What `unlock` lifted, and the steps it added (their ids, in order)."""

    paths: tuple[str, ...]
    test_ids: tuple[str, ...]
    config: int
    phases: tuple[str, ...]
    tests_step: int  # the tests phase's new step
    earlier_tests_step: int  # the tests step that made the locks


def unlock(
    store: Store,
    settings: Settings,
    ticket_id: int,
    reason: str,
    restart: Callable[[int, int], None] | None = None,
) -> Unlocked:
    """Lift a ticket's test locks (a human says they are wrong): record why, delete the locks,
    and run the tests phase again, then the phases after it. `restart(earlier_tests_step,
    new_tests_step)` runs before the commit (the code path starts the new tests step from
    where the earlier one started); if it fails, nothing is written."""
    now = m.utcnow()
    tid = {"tid": ticket_id}
    with store.transaction() as conn:
        state = conn.execute(sql.TICKET_STATE_POSITION, tid).one_or_none()
        if state is None:
            raise TicketError(f"no ticket #{ticket_id}")
        steps = conn.execute(sql.TICKET_STEPS, tid).all()
        paths = tuple(path for path, _ in conn.execute(sql.LOCKS, tid))
        ids = tuple(test_id for _, test_id in conn.execute(sql.LOCKED_IDS, tid))
        config = len(conn.execute(sql.CONFIG_LOCKS, tid).all())
        current = steps[state.position] if state.position < len(steps) else None
        held = (
            current is not None
            and current.status == StepStatus.CLAIMED
            and current.lease_expires_at is not None
            and current.lease_expires_at >= now
        )
        facts = UnlockFacts(
            ticket_id,
            state.status,
            held,
            paths,
            ids,
            config,
            tuple((step.phase, step.origin) for step in steps),
            state.position,
        )
        t = decide_unlock(facts, reason)
        earlier = max(step.id for step in steps if step.phase == "tests")
        apply(conn, Target(ticket_id, parent_id=state.parent_id), t, now, settings=settings)
        for statement in (sql.DELETE_LOCKS, sql.DELETE_CONFIG_LOCKS, sql.DELETE_LOCKED_IDS):
            conn.execute(statement, tid)
        added = conn.execute(sql.TICKET_STEPS, tid).all()[len(steps) :]
        assert t.restart is not None and added
        if restart is not None:
            restart(earlier, added[0].id)
    return Unlocked(paths, ids, config, t.restart.phases, added[0].id, earlier)
