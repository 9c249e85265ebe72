"""The lifecycle's decisions, table-driven and without a database: every verdict outcome ×
lane × last step × parent (× split) that a route can produce, every human move from every
status, an epic's settlement; and the two promises of its module: one way to done, and no
function-level imports between engine modules.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from shipline.engine import lifecycle as lc
from shipline.engine.code import WorktreeState
from shipline.errors import TicketError
from shipline.store import models as m
from shipline.store.models import StepOrigin, StepStatus, TicketStatus

SRC = Path(__file__).resolve().parents[1] / "src" / "shipline"
JUDGED = (("workspace", "worktree /w on branch b"), ("judge", "implement attempt 1: green"))


# --- verdicts: outcome × lane × last × parent × split ----------------------------------------


@dataclass(frozen=True)
class Expect:
    step: StepStatus
    ends_in: TicketStatus
    kinds: tuple[str, ...]  # the events after the judge's own lines
    move: int = 0
    finish: bool = False
    children: bool = False
    insert: StepOrigin | None = None


RED_CI = lc.FollowUp(StepOrigin.CI, "FAILED tests/test_x.py::test_y")
MERGE_CONFLICT = lc.FollowUp(StepOrigin.MERGE, "CONFLICT (content): greet.py", conflict=True)
MERGE_RED = lc.FollowUp(StepOrigin.MERGE, "FAILED after the rebase")

# outcome: (objections, follow-up, attempts used before, phases it happens on, last-step values)
OUTCOMES: dict[
    str, tuple[tuple[str, ...], lc.FollowUp | None, int, tuple[str, ...], tuple[bool, ...]]
] = {
    "passed": ((), None, 0, ("plan", "split"), (False, True)),
    "passed, CI red": ((), RED_CI, 0, ("implement",), (False, True)),
    "passed, merge conflict": ((), MERGE_CONFLICT, 0, ("implement", "review"), (True,)),
    "passed, merge red": ((), MERGE_RED, 0, ("implement", "review"), (True,)),
    "rejected": (("no R1", "no R2"), None, 0, ("plan", "split"), (False, True)),
    "exhausted": (("no R1", "no R2"), None, 2, ("plan", "split"), (False, True)),
}


def expected(outcome: str, last: bool, split: bool) -> Expect:
    passed = StepStatus.PASSED
    if outcome == "passed":
        if not last:
            return Expect(passed, TicketStatus.QUEUED, ("passed",), move=1)
        if split:
            return Expect(passed, TicketStatus.WAITING, ("passed",), move=1, children=True)
        return Expect(passed, TicketStatus.DONE, ("passed", "done"), move=1, finish=True)
    if outcome.startswith("passed, "):
        origin = StepOrigin.CI if outcome == "passed, CI red" else StepOrigin.MERGE
        return Expect(passed, TicketStatus.QUEUED, ("passed", "fix-ci"), move=1, insert=origin)
    if outcome == "rejected":
        return Expect(StepStatus.PENDING, TicketStatus.QUEUED, ("failed",))
    return Expect(StepStatus.FAILED, TicketStatus.NEEDS_HUMAN, ("failed", "handoff"))


def _cases() -> list[tuple[str, str, int, bool, bool]]:
    cases = []
    for outcome, (_, _, _, phases, lasts) in OUTCOMES.items():
        for phase, lane, last, parent in itertools.product(phases, (1, 2, 3), lasts, (False, True)):
            if phase == "split" and not last:
                continue  # a route may only end with split (engine/routes.py)
            cases.append((outcome, phase, lane, last, parent))
    return cases


@pytest.mark.parametrize(("outcome", "phase", "lane", "last", "parent"), _cases())
def test_a_verdict_moves_the_step_and_the_ticket(
    outcome: str, phase: str, lane: int, last: bool, parent: bool
) -> None:
    objections, followup, used, _, _ = OUTCOMES[outcome]
    facts = lc.StepFacts(phase, lane, last, parent, attempts_used=used, attempts_allowed=3)
    verdict = lc.AttemptVerdict(used + 1, objections, "validator", followup, JUDGED)
    t = lc.decide_verdict(facts, verdict)
    want = expected(outcome, last, phase == "split")

    assert t.step == lc.Close(
        want.step,
        used=1,  # a judged attempt always counts
        accept=want.step == StepStatus.PASSED,
        finished=want.step != StepStatus.PENDING,
    )
    assert t.ends_in == want.ends_in
    assert (t.move, t.finish, t.children) == (want.move, want.finish, want.children)
    assert t.settle == (want.finish and parent)  # a child that is done may finish its epic
    assert (t.insert.origin if t.insert else None) == want.insert
    assert t.events[: len(JUDGED)] == JUDGED  # the judge's lines come first
    assert tuple(kind for kind, _ in t.events[len(JUDGED) :]) == want.kinds
    assert (t.handoff is not None) == (want.ends_in == TicketStatus.NEEDS_HUMAN)
    assert not t.skip_steps
    # the lane is a fact the decision gets; no rule of today's lifecycle depends on it
    for other in (1, 2, 3):
        same = lc.StepFacts(phase, other, last, parent, attempts_used=used, attempts_allowed=3)
        assert lc.decide_verdict(same, verdict) == t


def test_a_passed_attempt_says_where_the_ticket_went() -> None:
    facts = lc.StepFacts("review", 2, True, False, attempts_used=0, attempts_allowed=3)
    t = lc.decide_verdict(facts, lc.AttemptVerdict(1, source="validator"))
    assert t.events == (("passed", "review attempt 1: passed (validator)"), lc.DONE_EVENT)
    assert t.summary == "review passed on attempt 1 → done"


def test_a_red_ci_inserts_fix_ci_with_the_failure_as_its_context() -> None:
    facts = lc.StepFacts("implement", 2, False, False, attempts_used=0, attempts_allowed=3)
    t = lc.decide_verdict(facts, lc.AttemptVerdict(1, source="judge", followup=RED_CI))
    assert t.insert == lc.NewStep("fix-ci", StepOrigin.CI, RED_CI.context)
    assert t.events[-1] == ("fix-ci", "CI is red after implement: fix-ci starts")
    # red CI is never called "passed": not in the history, not in the worker's progress line
    assert t.summary == "implement accepted with red CI on attempt 1 → fix-ci"
    assert ("passed", "implement attempt 1: accepted with red CI (judge; the judge is red)") in (
        t.events
    )
    assert not any("passed (" in message or "passed on" in message for _, message in t.events)


@pytest.mark.parametrize(
    ("followup", "line"),
    [
        (MERGE_CONFLICT, "the merge found a conflict: fix-ci starts"),
        (MERGE_RED, "the merge found a red judge: fix-ci starts"),
    ],
)
def test_a_failed_merge_inserts_fix_ci_once_and_says_why(followup: lc.FollowUp, line: str) -> None:
    facts = lc.StepFacts("review", 2, True, False, attempts_used=0, attempts_allowed=3)
    t = lc.decide_verdict(facts, lc.AttemptVerdict(1, followup=followup))
    assert t.insert == lc.NewStep("fix-ci", StepOrigin.MERGE, followup.context)
    assert t.events[-1] == ("fix-ci", line)
    assert not t.finish  # the merge is not done: fix-ci runs, then the merge is tried again


def test_a_rejected_attempt_lists_its_objections_and_queues_another() -> None:
    facts = lc.StepFacts("plan", 1, False, False, attempts_used=0, attempts_allowed=3)
    t = lc.decide_verdict(facts, lc.AttemptVerdict(1, ("no R1", "no R2"), "validator"))
    assert t.events == (("failed", "plan attempt 1: 2 objection(s) (validator): no R1; no R2"),)
    assert t.summary == "plan attempt 1 rejected: no R1"
    assert t.step == lc.Close(StepStatus.PENDING, used=1)


def test_the_last_allowed_attempt_hands_off_with_the_remaining_objections() -> None:
    facts = lc.StepFacts("plan", 3, False, True, attempts_used=1, attempts_allowed=2)
    t = lc.decide_verdict(facts, lc.AttemptVerdict(2, ("no R1",), "checks"))
    reason = "plan used 2/2 attempts; remaining objections: no R1"
    assert t.handoff == reason
    assert t.events == (("failed", "plan attempt 2: 1 objection(s) (checks)"), ("handoff", reason))
    assert t.summary == "plan failed attempt 2 → needs-human"
    assert not t.settle  # a child in needs-human leaves its epic waiting


def test_a_handoff_keeps_the_attempt_uncounted_and_the_step_pending() -> None:
    t = lc.decide_handoff("implement: budget reached", JUDGED)
    assert t.step == lc.Close(StepStatus.PENDING)
    assert t.ends_in == TicketStatus.NEEDS_HUMAN
    assert t.events == (*JUDGED, ("handoff", "implement: budget reached"))
    assert (t.move, t.finish, t.children, t.settle, t.insert) == (0, False, False, False, None)


# --- claims -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resumed", "first", "kinds"),
    [(False, True, ("started",)), (True, False, ("resumed",)), (False, False, ())],
)
def test_a_claim_sets_the_ticket_running(resumed: bool, first: bool, kinds: tuple[str]) -> None:
    t = lc.decide_claim("plan", "w1", resumed=resumed, first=first)
    assert t.ends_in == TicketStatus.RUNNING
    assert t.step is None and t.move == 0
    assert tuple(kind for kind, _ in t.events) == kinds


# --- the human's moves from each status -------------------------------------------------------

STATUSES = list(TicketStatus)


def _facts(
    status: str, *, last: bool = False, split: bool = False, parent: bool = False
) -> lc.TicketFacts:
    return lc.TicketFacts(7, status, "split" if split else "plan", last, parent)


@pytest.mark.parametrize("status", STATUSES)
def test_approve_and_retry_only_from_needs_human(status: TicketStatus) -> None:
    facts = _facts(status)
    if status == TicketStatus.NEEDS_HUMAN:
        assert lc.decide_approve(facts).ends_in == TicketStatus.QUEUED
        assert lc.decide_retry(facts, 2, None).ends_in == TicketStatus.QUEUED
        return
    for move in (lambda: lc.decide_approve(facts), lambda: lc.decide_retry(facts, 2, None)):
        with pytest.raises(TicketError, match=f"ticket #7 is {status}, not needs-human"):
            move()


@pytest.mark.parametrize("status", STATUSES)
def test_cancel_from_any_status_that_has_not_ended(status: TicketStatus) -> None:
    for parent in (False, True):
        facts = _facts(status, parent=parent)
        if status in m.FINAL_STATUSES:
            with pytest.raises(TicketError, match=f"ticket #7 is already {status}"):
                lc.decide_cancel(facts)
            continue
        t = lc.decide_cancel(facts)
        assert t.ends_in == TicketStatus.CANCELLED
        assert t.skip_steps and t.step is None
        assert t.events == (("cancelled", "cancelled by a human"),)
        assert t.settle == parent  # a cancelled child may leave its epic with nothing to wait for


@pytest.mark.parametrize(
    ("last", "split", "parent", "ends_in", "finish", "children"),
    [
        (False, False, False, TicketStatus.QUEUED, False, False),
        (False, False, True, TicketStatus.QUEUED, False, False),
        (True, False, False, TicketStatus.DONE, True, False),
        (True, False, True, TicketStatus.DONE, True, False),
        (True, True, False, TicketStatus.WAITING, False, True),
        (True, True, True, TicketStatus.WAITING, False, True),
    ],
)
def test_approve_accepts_the_phase_and_moves_on(
    last: bool,
    split: bool,
    parent: bool,
    ends_in: TicketStatus,
    finish: bool,
    children: bool,
) -> None:
    facts = _facts(TicketStatus.NEEDS_HUMAN, last=last, split=split, parent=parent)
    t = lc.decide_approve(facts)
    assert t.step == lc.Close(StepStatus.APPROVED, accept=True, finished=True)
    assert t.ends_in == ends_in and t.move == 1
    assert (t.finish, t.children, t.settle) == (finish, children, finish and parent)
    assert t.events[0] == ("approved", f"{facts.phase}: accepted by a human")


def test_a_settled_epic_has_no_phase_to_approve_or_retry() -> None:
    facts = lc.TicketFacts(7, TicketStatus.NEEDS_HUMAN, None, False, False)
    with pytest.raises(TicketError, match="has no phase waiting for approval"):
        lc.decide_approve(facts)
    with pytest.raises(TicketError, match="has no phase to retry"):
        lc.decide_retry(facts, 1, None)


def test_retry_reopens_the_step_with_more_attempts_and_the_note() -> None:
    t = lc.decide_retry(_facts(TicketStatus.NEEDS_HUMAN), 2, "Number them R1..Rn")
    assert t.step == lc.Reopen(2, "Number them R1..Rn")
    assert t.events == (("retry", "plan: 2 more attempt(s), note: Number them R1..Rn"),)
    assert lc.decide_retry(_facts(TicketStatus.NEEDS_HUMAN), 1, "").step == lc.Reopen(1, None)


def test_a_ticket_blocked_by_cancelled_tickets_goes_to_a_human() -> None:
    t = lc.decide_blocked([3, 5])
    assert t.handoff == "depends on #3, #5, cancelled"
    assert t.events == (("handoff", t.handoff),)


# --- lifting a ticket's test locks (`shipline tests unlock`) -----------------------------------

HOTFIX_STEPS = (
    ("diagnose", None),
    ("tests", None),
    ("implement", None),
    ("fix-ci", "ci"),  # inserted after red CI: not part of what runs again
    ("review", None),
)


def _unlock_facts(
    status: str,
    *,
    held: bool = False,
    locks: bool = True,
    steps: tuple[tuple[str, str | None], ...] = HOTFIX_STEPS,
) -> lc.UnlockFacts:
    return lc.UnlockFacts(
        7,
        status,
        held,
        ("tests/test_x.py",) if locks else (),
        ("tests/test_x.py::test_a", "tests/test_x.py::test_b") if locks else (),
        16 if locks else 0,
        steps,
        3,
    )


def _unlock_refusal(status: str, held: bool, locks: bool, reason: str) -> str | None:
    if not reason.strip():
        return "--reason is required"
    if status in m.FINAL_STATUSES:
        return f"ticket #7 is {status}: its locks are history now"
    if not locks:
        return "ticket #7 has no locked tests to unlock"
    if held:
        return "ticket #7's step is held by a live worker"
    return None


@pytest.mark.parametrize(
    ("status", "held", "locks", "reason"),
    list(itertools.product(STATUSES, (False, True), (True, False), ("the test is wrong", " "))),
)
def test_unlock_is_refused_without_a_reason_locks_or_a_free_step_and_after_the_end(
    status: TicketStatus, held: bool, locks: bool, reason: str
) -> None:
    facts = _unlock_facts(status, held=held, locks=locks)
    refusal = _unlock_refusal(status, held, locks, reason)
    if refusal is not None:
        with pytest.raises(TicketError, match=re.escape(refusal)):
            lc.decide_unlock(facts, reason)
        return
    t = lc.decide_unlock(facts, reason)
    assert t.ends_in == TicketStatus.QUEUED and t.skip_steps and t.step is None
    assert t.move == len(HOTFIX_STEPS) - 3  # onto the first appended step
    assert t.restart == lc.Restart(
        ("tests", "implement", "review"),
        "The locked tests were unlocked by a human: the test is wrong",
    )
    assert t.events == (
        (
            "unlocked",
            "tests unlocked by a human: the test is wrong. Lifted: tests/test_x.py (2 test "
            "id(s): tests/test_x.py::test_a, tests/test_x.py::test_b), and 16 test "
            "configuration lock(s). Runs again: tests → implement → review",
        ),
    )


def test_a_second_unlock_runs_the_latest_tests_phase_again() -> None:
    steps = (*HOTFIX_STEPS, ("tests", None), ("implement", None), ("review", None))
    t = lc.decide_unlock(_unlock_facts(TicketStatus.NEEDS_HUMAN, steps=steps), "still wrong")
    assert t.restart is not None and t.restart.phases == ("tests", "implement", "review")
    assert t.move == len(steps) - 3


# --- approving a code phase: a worker applies it, judges it, lands it ------------------------

WT = Path("/w/7")
SHA = "c0ffee" + "0" * 34


def _worktree(
    *,
    commit: str | None = None,
    edited: tuple[str, ...] = (),
    unmerged: tuple[str, ...] = (),
    markers: tuple[str, ...] = (),
) -> WorktreeState:
    return WorktreeState(WT, "shipline/7-x", "1" * 40, commit, edited, unmerged, markers)


def _code_facts(phase: str, *, last: bool, code: bool, merges: bool) -> lc.TicketFacts:
    return lc.TicketFacts(7, TicketStatus.NEEDS_HUMAN, phase, last, False, code, merges)


@pytest.mark.parametrize(
    ("phase", "last", "code", "merges", "applied"),
    [
        # no judge: every phase is accepted as it stands (its code is text only)
        ("implement", False, False, False, False),
        ("review", True, False, False, False),
        # a judge: a code phase is applied by a worker; so is the last step of a merging route
        ("tests", False, True, True, True),
        ("implement", False, True, True, True),
        ("fix-ci", True, True, True, True),
        ("review", True, False, True, True),
        ("review", False, False, True, False),
        ("plan", False, False, True, False),
    ],
)
def test_approve_queues_what_a_worker_must_apply_and_accepts_the_rest(
    phase: str, last: bool, code: bool, merges: bool, applied: bool
) -> None:
    facts = _code_facts(phase, last=last, code=code, merges=merges)
    assert facts.applied == applied
    t = lc.decide_approve(facts, _worktree())
    if not applied:
        assert t.step == lc.APPROVED and t.move == 1
        assert t.events[0] == ("approved", f"{phase}: accepted by a human")
        return
    # the step waits for a worker: pending, the ticket queued, nothing accepted, not done
    assert t.step == lc.Close(StepStatus.PENDING)
    assert t.ends_in == TicketStatus.QUEUED
    assert (t.move, t.finish, t.children, t.insert) == (0, False, False, None)
    ((kind, line),) = t.events
    assert kind == "approved" and line.startswith(f"{phase}: approved by a human; the next worker")
    assert ("runs the judge" in line) == code
    assert ("lands the ticket" in line) == (last and merges)


@pytest.mark.parametrize(
    ("worktree", "edited", "refusal"),
    [
        # nothing of the human's: the attempt (or the edited text) is applied
        (None, False, None),
        (_worktree(), False, None),
        (_worktree(), True, None),
        # what the last attempt left unresolved cannot be approved as it stands...
        (_worktree(unmerged=("ledger/accounts.py",)), False, "unmerged paths ledger/accounts.py"),
        (_worktree(markers=("ledger/accounts.py",)), False, "conflict markers remain"),
        # ...but a resolved text given with --file replaces it
        (_worktree(unmerged=("ledger/accounts.py",)), True, None),
        # the human's uncommitted changes would be lost: never
        (_worktree(edited=("a.py",)), False, "uncommitted changes in a.py"),
        (_worktree(edited=("a.py",)), True, "uncommitted changes in a.py"),
        # the human's commit is taken, unless it still holds conflict markers
        (_worktree(commit=SHA), False, None),
        (_worktree(commit=SHA, markers=("a.py",)), False, "your commit c0ffee0000"),
        (_worktree(commit=SHA), True, "your commit c0ffee0000, and --file gives another"),
    ],
)
def test_approving_a_code_phase_is_refused_when_the_worktree_says_it_cannot_work(
    worktree: WorktreeState | None, edited: bool, refusal: str | None
) -> None:
    facts = _code_facts("fix-ci", last=True, code=True, merges=True)
    if refusal is None:
        t = lc.decide_approve(facts, worktree, edited=edited)
        assert t.ends_in == TicketStatus.QUEUED and not t.finish
        if worktree is not None and worktree.commit:
            assert f"applies your commit {SHA[:10]} on branch shipline/7-x" in t.events[0][1]
        return
    with pytest.raises(TicketError, match="approve refused: ") as raised:
        lc.decide_approve(facts, worktree, edited=edited)
    assert refusal in str(raised.value)
    assert str(WT) in str(raised.value)  # where to go


@pytest.mark.parametrize(
    ("worktree", "refused"),
    [
        (None, False),
        (_worktree(), False),
        (_worktree(unmerged=("a.py",)), False),  # what the last attempt left: retry replaces it
        (_worktree(commit=SHA), True),
        (_worktree(edited=("a.py",)), True),
    ],
)
def test_retry_never_discards_what_a_human_left_in_the_worktree(
    worktree: WorktreeState | None, refused: bool
) -> None:
    facts = _code_facts("fix-ci", last=True, code=True, merges=True)
    if not refused:
        assert lc.decide_retry(facts, 1, None, worktree).ends_in == TicketStatus.QUEUED
        return
    with pytest.raises(TicketError, match=r"retry refused: .* discarding it") as raised:
        lc.decide_retry(facts, 1, None, worktree)
    assert "`shipline approve 7` takes a commit" in str(raised.value)
    assert f"reset --hard {'1' * 12}" in str(raised.value)
    # a text phase has nothing in a worktree to lose
    text_facts = _code_facts("plan", last=False, code=False, merges=True)
    assert lc.decide_retry(text_facts, 1, None, worktree).ends_in == TicketStatus.QUEUED


@pytest.mark.parametrize(
    ("objections", "followup", "last", "ends_in", "kinds"),
    [
        ((), None, True, TicketStatus.DONE, ("passed", "done")),
        ((), None, False, TicketStatus.QUEUED, ("passed",)),
        ((), MERGE_CONFLICT, True, TicketStatus.QUEUED, ("passed", "fix-ci")),
        (("CI is red: exit 1",), None, True, TicketStatus.NEEDS_HUMAN, ("refused", "handoff")),
        (("CI is red: exit 1",), RED_CI, False, TicketStatus.NEEDS_HUMAN, ("refused", "handoff")),
    ],
)
def test_an_applied_approval_stands_when_the_judge_agrees_and_is_refused_when_not(
    objections: tuple[str, ...],
    followup: lc.FollowUp | None,
    last: bool,
    ends_in: TicketStatus,
    kinds: tuple[str, ...],
) -> None:
    facts = lc.StepFacts("fix-ci", 2, last, False, attempts_used=3, attempts_allowed=3)
    source = "judge" if objections else "human"
    verdict = lc.AttemptVerdict(4, objections, source, followup, JUDGED, approved=True)
    t = lc.decide_verdict(facts, verdict)
    assert t.ends_in == ends_in
    assert t.events[: len(JUDGED)] == JUDGED
    assert tuple(kind for kind, _ in t.events[len(JUDGED) :]) == kinds
    if objections:  # the attempt never counts, and the step waits for the human again
        assert t.step == lc.Close(StepStatus.PENDING)
        assert t.handoff == "fix-ci: the approval is refused (judge): CI is red: exit 1"
        return
    assert t.step == lc.APPROVED  # approved, not "passed": a human's word, applied
    assert t.events[len(JUDGED)] == ("passed", "fix-ci attempt 4: approved by a human and applied")
    assert t.finish == (last and followup is None)


# --- an epic's settlement ----------------------------------------------------------------------

D, C, Q, H = (
    TicketStatus.DONE,
    TicketStatus.CANCELLED,
    TicketStatus.QUEUED,
    TicketStatus.NEEDS_HUMAN,
)


@pytest.mark.parametrize(
    ("children", "ends_in", "reason"),
    [
        ([D, D], TicketStatus.DONE, None),
        ([], TicketStatus.DONE, None),
        ([D, C], TicketStatus.NEEDS_HUMAN, "children #2 were cancelled"),
        ([C, C], TicketStatus.NEEDS_HUMAN, "children #1, #2 were cancelled"),
        ([D, Q], None, None),
        ([C, H], None, None),
    ],
)
def test_an_epic_settles_when_its_children_end(
    children: list[TicketStatus], ends_in: TicketStatus | None, reason: str | None
) -> None:
    pairs = list(enumerate(children, start=1))
    for grandparent in (False, True):
        t = lc.decide_settlement(TicketStatus.WAITING, pairs, parent=grandparent)
        if ends_in is None:
            assert t is None
            continue
        assert t is not None and t.ends_in == ends_in and t.handoff == reason
        assert t.settle == (t.finish and grandparent)  # a done epic may finish its own epic
    for status in STATUSES:
        if status != TicketStatus.WAITING:  # only an epic that waits is settled
            assert lc.decide_settlement(status, pairs, parent=False) is None


# --- the promises ----------------------------------------------------------------------------


def test_done_and_needs_human_are_reached_only_by_finish_and_handoff() -> None:
    with pytest.raises(ValueError, match="finish or handoff"):
        lc.Transition(status=TicketStatus.DONE)
    with pytest.raises(ValueError, match="finish or handoff"):
        lc.Transition(status=TicketStatus.NEEDS_HUMAN)


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_exactly_one_code_path_sets_a_ticket_to_done() -> None:
    done_names = {"DONE"}  # m.DONE, TicketStatus.DONE
    writers = []  # .values(status=<done>) in a prebuilt statement
    orm_writes = []  # ticket.status = … through the ORM
    finishers = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.keyword) and node.arg == "status":
                value = node.value
                if isinstance(value, ast.Attribute) and value.attr in done_names:
                    owner = value.value  # m.DONE or TicketStatus.DONE; a work item's
                    name = owner.attr if isinstance(owner, ast.Attribute) else None  # own
                    name = owner.id if isinstance(owner, ast.Name) else name  # WorkStatus
                    if name in ("m", "TicketStatus"):  # DONE is another state machine
                        writers.append(path.name)
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and target.attr == "status"
                        and not (isinstance(target.value, ast.Name) and target.value.id == "self")
                    ):
                        orm_writes.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr == "FINISH_TICKET":
                finishers.append(path.name)
    assert writers == ["sql.py"]  # FINISH_TICKET's .values(status=m.DONE)
    assert finishers == ["lifecycle.py"]  # executed in one place: lifecycle.apply
    assert orm_writes == []  # no `ticket.status = …` through the ORM


def test_no_engine_module_imports_another_inside_a_function() -> None:
    found = []
    for path in sorted((SRC / "engine").glob("*.py")):
        tree = _tree(path)
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                    "shipline.engine"
                ):
                    found.append(f"{path.name}:{node.lineno} {node.module}")
        for node in tree.body:  # nor behind `if TYPE_CHECKING:`, which hides a cycle too
            if isinstance(node, ast.If):
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith(
                        "shipline.engine"
                    ):
                        found.append(f"{path.name}:{sub.lineno} {sub.module}")
    assert found == []


def test_statuses_and_origins_are_str_enums_with_the_same_strings() -> None:
    assert m.QUEUED is TicketStatus.QUEUED and m.PENDING is StepStatus.PENDING
    assert [s.value for s in TicketStatus] == [
        "queued",
        "running",
        "waiting-children",
        "needs-human",
        "done",
        "cancelled",
    ]
    assert [s.value for s in StepStatus] == [
        "pending",
        "claimed",
        "passed",
        "approved",
        "failed",
        "skipped",
    ]
    assert [o.value for o in StepOrigin] == ["ci", "merge"]
    assert json.dumps({"status": m.WAITING, "origin": StepOrigin.MERGE}) == (
        '{"status": "waiting-children", "origin": "merge"}'
    )
    assert f"→ {m.NEEDS_HUMAN}" == "→ needs-human" and m.DONE == "done"
    assert m.FINAL_STATUSES == ("done", "cancelled") and m.ACTIVE_STATUSES == ("queued", "running")
