"""Ticket views from the store: the list, one ticket in full, one deliverable's text.

Read-only: each builder opens one session, reads, and returns views that outlive it. The
words a view carries (an attempt's state and account, whether code was applied) are decided
here, so the CLI, the board and the JSON say the same thing.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from shipline.api.views import (
    AttemptView,
    CallView,
    ChildView,
    ContextView,
    EventView,
    JudgeRunView,
    MergeView,
    PhaseView,
    TicketDetail,
    TicketSummary,
    VerdictView,
)
from shipline.costs import TOTAL, CostGroup, bill, bills
from shipline.engine.code import CODE_PHASES
from shipline.engine.lifecycle import HUMAN
from shipline.engine.tickets import current_step, get_ticket
from shipline.errors import TicketError
from shipline.phases import get_phase
from shipline.store import models as m
from shipline.store.db import Store


def code_applied(route: list[str], merged: bool) -> bool | None:
    """Whether a ticket's change reached its target; None for a route without code phases."""
    return merged if any(phase in CODE_PHASES for phase in route) else None


def ticket_summary(
    session: Session,
    ticket: m.Ticket,
    charges: CostGroup | None = None,
    merged: bool | None = None,
) -> TicketSummary:
    """One ticket's row. `charges` (its bill) and `merged` (whether it has a merges row): when
    the caller read them already (a list reads them all in one query each)."""
    step = current_step(ticket)
    if charges is None:
        charges = bill(session, m.Call.ticket_id == ticket.id)
    if merged is None:
        merged = (
            session.scalar(select(m.Merge.id).where(m.Merge.ticket_id == ticket.id)) is not None
        )
    return TicketSummary(
        id=ticket.id,
        kind=ticket.kind,
        title=ticket.title,
        lane=ticket.lane,
        sensitive=ticket.sensitive,
        status=ticket.status,
        phase=step.phase if step else None,
        phases_done=sum(1 for s in ticket.steps if s.status in m.STEP_DONE),
        phases_total=len(ticket.steps),
        attempts=sum(s.attempts_used for s in ticket.steps),
        parent_id=ticket.parent_id,
        tokens=charges.input_tokens + charges.output_tokens,
        cost=charges.cost_usd,
        cost_text=charges.cost_text,
        unknown_price_calls=charges.unknown_calls,
        handoff_reason=ticket.handoff_reason,
        code_applied=code_applied(list(ticket.route), merged),
        created_at=ticket.created_at,
        updated_at=ticket.updated_at,
    )


def list_tickets(
    store: Store, status: str | None = None, *, limit: int | None = None
) -> list[TicketSummary]:
    """Every ticket (or those with `status`), oldest first; with `limit`, only the newest
    `limit` of them (`count_tickets` says how many there are). Four queries, however many."""
    with store.session() as session:
        ids = select(m.Ticket.id)
        if status:
            ids = ids.where(m.Ticket.status == status)
        if limit is not None:
            ids = ids.order_by(m.Ticket.id.desc()).limit(limit)
        page = ids.scalar_subquery() if limit is not None else ids
        query = (
            select(m.Ticket)
            .where(m.Ticket.id.in_(page))
            .order_by(m.Ticket.id)
            .options(selectinload(m.Ticket.steps))
        )
        tickets = list(session.scalars(query))
        charges = bills(session, m.Call.ticket_id.in_(page))
        merged = set(session.scalars(select(m.Merge.ticket_id).where(m.Merge.ticket_id.in_(page))))
        return [
            ticket_summary(session, t, charges.get(t.id, CostGroup(TOTAL)), t.id in merged)
            for t in tickets
        ]


def count_tickets(store: Store, status: str | None = None) -> int:
    """How many tickets there are (with `status`)."""
    with store.session() as session:
        query = select(func.count()).select_from(m.Ticket)
        if status:
            query = query.where(m.Ticket.status == status)
        return int(session.scalar(query) or 0)


def ticket_detail(store: Store, ticket_id: int) -> TicketDetail:
    """Everything `ticket show` prints: phases, attempts, verdicts, calls, events."""
    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        calls = list(
            session.scalars(select(m.Call).where(m.Call.ticket_id == ticket.id).order_by(m.Call.id))
        )
        children = session.scalars(
            select(m.Ticket).where(m.Ticket.parent_id == ticket.id).order_by(m.Ticket.id)
        ).all()
        depends_on = session.scalars(
            select(m.Dependency.depends_on_id).where(m.Dependency.ticket_id == ticket.id)
        ).all()
        merge = session.scalars(select(m.Merge).where(m.Merge.ticket_id == ticket.id)).first()
        events = session.scalars(
            select(m.Event).where(m.Event.ticket_id == ticket.id).order_by(m.Event.id)
        ).all()
        runs: dict[tuple[int | None, int | None], list[JudgeRunView]] = {}
        for run in session.scalars(
            select(m.JudgeRun).where(m.JudgeRun.ticket_id == ticket.id).order_by(m.JudgeRun.id)
        ):
            runs.setdefault((run.step_id, run.attempt), []).append(_judge_run(run))
        return TicketDetail(
            **dict(ticket_summary(session, ticket, merged=merge is not None)),
            body=ticket.body,
            route=list(ticket.route),
            children=[
                ChildView(id=c.id, title=c.title, status=c.status, key=c.child_key)
                for c in children
            ],
            depends_on=list(depends_on),
            merge=(
                MergeView(
                    target=merge.target,
                    commit=merge.commit,
                    mode=merge.mode,
                    url=merge.url,
                    at=merge.merged_at,
                )
                if merge is not None
                else None
            ),
            last_objections=_last_objections(ticket),
            phases=[_phase(session, ticket, step, calls, runs) for step in ticket.steps],
            calls=[_call(c) for c in calls],
            events=[EventView(at=e.created_at, kind=e.kind, message=e.message) for e in events],
        )


def _last_objections(ticket: m.Ticket) -> list[str]:
    """While a human is asked: the objections of the current phase's last judged attempt."""
    step = current_step(ticket)
    if ticket.status != m.NEEDS_HUMAN or step is None:
        return []
    judged = [a.verdict for a in step.attempts if a.verdict is not None]
    return list(judged[-1].objections) if judged and not judged[-1].passed else []


def _phase(
    session: Session,
    ticket: m.Ticket,
    step: m.Step,
    calls: list[m.Call],
    runs: dict[tuple[int | None, int | None], list[JudgeRunView]],
) -> PhaseView:
    step_calls = [c for c in calls if c.step_id == step.id]
    charges = bill(session, m.Call.step_id == step.id)
    return PhaseView(
        phase=step.phase,
        deliverable=get_phase(step.phase).deliverable,
        status=step.status,
        attempts_used=step.attempts_used,
        attempts_allowed=step.attempts_allowed,
        started_at=step.started_at,
        finished_at=step.finished_at,
        seconds=(
            (step.finished_at - step.started_at).total_seconds()
            if step.started_at and step.finished_at
            else None
        ),
        tokens_in=sum(c.input_tokens for c in step_calls),
        tokens_out=sum(c.output_tokens for c in step_calls),
        cost=charges.cost_usd,
        cost_text=charges.cost_text,
        models=sorted({f"{c.provider}/{c.model}" for c in step_calls if c.model}),
        note=step.note,
        origin=step.origin,
        attempts=[
            _attempt(ticket, step, a, runs.get((step.id, a.number), [])) for a in step.attempts
        ],
    )


def _attempt(
    ticket: m.Ticket, step: m.Step, attempt: m.Attempt, runs: list[JudgeRunView]
) -> AttemptView:
    verdict = (
        VerdictView(
            passed=attempt.verdict.passed,
            source=attempt.verdict.source,
            objections=list(attempt.verdict.objections),
        )
        if attempt.verdict is not None
        else None
    )
    human = attempt.worker == HUMAN
    return AttemptView(
        number=attempt.number,
        worker=attempt.worker,
        truncated=attempt.truncated,
        chars=len(attempt.text),
        created_at=attempt.created_at,
        verdict=verdict,
        state=attempt_state(step.phase, human, verdict, runs, step.status, ticket.status),
        account=attempt_account(human, verdict, runs),
        judge_runs=runs,
        context=ContextView.of(attempt.context),
    )


def _red_ci(phase: str, verdict: VerdictView | None, runs: list[JudgeRunView]) -> bool:
    """Implement accepted while the judge was red: it stands, and fix-ci follows."""
    return (
        phase == "implement"
        and verdict is not None
        and verdict.passed
        and any(run.purpose == "judge" and not run.green for run in runs)
    )


def attempt_state(
    phase: str,
    human: bool,
    verdict: VerdictView | None,
    runs: list[JudgeRunView],
    step_status: str,
    ticket_status: str,
) -> str:
    """What became of an attempt, in words (pure)."""
    if verdict is None:
        if step_status == m.CLAIMED:
            return "being applied" if human else "awaiting verdict"
        if ticket_status == m.NEEDS_HUMAN or ticket_status in m.FINAL_STATUSES:
            return "no verdict (handed off)"
        return "approved by a human, waiting for a worker" if human else "awaiting verdict"
    if human:
        return "approved by a human" if verdict.passed else "approval refused"
    if _red_ci(phase, verdict, runs):
        return "accepted with red CI → fix-ci"
    return "passed" if verdict.passed else "rejected"


def _run_words(run: JudgeRunView) -> str:
    status = "killed at the timeout" if run.timed_out else f"exit {run.exit_code}"
    if run.purpose == "tests":  # the new tests must fail
        said = "new tests pass" if run.green else "new tests fail"
    else:
        said = f"{run.purpose} {'green' if run.green else 'red'}"
    return f"{said} ({status}, {run.duration_s:.1f} s)"


def attempt_account(human: bool, verdict: VerdictView | None, runs: list[JudgeRunView]) -> str:
    """Each judge of an attempt in the order they judged it: `checks ok · judge red (exit 1,
    2.1 s) · validator passed`, the merge's judge last (pure)."""
    parts: list[str] = []
    if not human and verdict is not None:  # a human's approval skips the checks
        objected = not verdict.passed and verdict.source == "checks"
        parts.append(f"checks: {len(verdict.objections)} objection(s)" if objected else "checks ok")
    parts += [_run_words(run) for run in runs if run.purpose != "merge"]
    if verdict is not None and not verdict.passed and verdict.source == "judge":
        parts.append(f"judge: {len(verdict.objections)} objection(s)")
    if verdict is not None and verdict.source == "validator":
        parts.append("validator passed" if verdict.passed else "validator rejected")
    elif verdict is not None and verdict.source == "error":
        parts.append("validator unreadable")
    parts += [_run_words(run) for run in runs if run.purpose == "merge"]  # the merge is last
    return " · ".join(parts)


def _judge_run(run: m.JudgeRun) -> JudgeRunView:
    return JudgeRunView(
        purpose=run.purpose,
        command=run.command,
        commit=run.commit,
        exit_code=run.exit_code,
        timed_out=run.timed_out,
        duration_s=run.duration_s,
        log_path=run.log_path,
    )


def _call(call: m.Call) -> CallView:
    return CallView(
        phase=call.phase,
        role=call.role,
        attempt=call.attempt,
        provider=call.provider,
        model=call.model,
        tier=call.tier,
        input_tokens=call.input_tokens,
        output_tokens=call.output_tokens,
        cached_tokens=call.cached_tokens,
        latency_ms=round(call.latency_ms, 1),
        cost=call.cost,
        fallback=call.fallback,
        error=call.error,
        estimated=call.estimated,
    )


CI_LOG = "ci.log"  # what the engine handed an inserted step (fix-ci): its excerpt


def deliverable_text(store: Store, ticket_id: int, name: str) -> str:
    """The accepted deliverable `name` (a file name or phase), or the latest attempt at it;
    `ci.log`: the failure excerpt the latest inserted fix-ci step was given. A phase that ran
    twice (fix-ci after red CI, then after a merge) gives its latest."""
    with store.session() as session:
        ticket = get_ticket(session, ticket_id)
        if name == CI_LOG:
            handed = [s.context for s in ticket.steps if s.context is not None]
            if handed:
                return handed[-1]
        for step in reversed(ticket.steps):
            if name in (step.phase, get_phase(step.phase).deliverable):
                if step.deliverable is not None:
                    return step.deliverable
                if step.attempts:
                    return step.attempts[-1].text
                raise TicketError(f"ticket #{ticket_id} has no attempt at {name} yet")
        names = [get_phase(s.phase).deliverable for s in ticket.steps]
        if any(s.context is not None for s in ticket.steps):
            names.append(CI_LOG)
        known = ", ".join(dict.fromkeys(names))
        why = (
            " (ci.log is what a fix-ci step is handed, and this ticket has none)"
            if name == CI_LOG
            else ""
        )
        raise TicketError(f"ticket #{ticket_id} has no deliverable {name!r}{why}; it has: {known}")
