"""`shipline tests unlock`: a human lifts a ticket's test locks that turned out wrong.

The tests phase locks its tests (files, pytest ids, the test configuration; engine/code.py).
When a locked test is wrong, nothing the implement phase may do can make it pass: the human
says so, with a reason. The locks are lifted, the move is recorded (an `unlocked` event with
the reason and what was lifted, shown by `ticket show`), and the tests phase runs again from
where it started, then the phases after it.
"""

from __future__ import annotations

from pathlib import Path

from shipline.api.views import View
from shipline.engine import lifecycle
from shipline.engine.code import CodePath
from shipline.engine.project import Project


class Unlocked(View):
    """What `tests unlock` lifted, and what runs again."""

    ticket: int
    reason: str
    paths: list[str]  # the locked test files
    test_ids: list[str]  # their locked pytest ids
    config: int  # test configuration paths that were locked
    phases: list[str]  # the phases that run again, the tests phase first


def unlock_tests(project: Project, ticket_id: int, *, reason: str) -> Unlocked:
    """Lift the ticket's test locks (TicketError when it has none, has ended, its step is held
    by a live worker, or `reason` is blank) and run its tests phase again."""
    code = CodePath(project.settings, Path(project.root), project.store)
    done = lifecycle.unlock(
        project.store,
        project.settings,
        ticket_id,
        reason,
        restart=lambda earlier, new: code.restart_tests(ticket_id, earlier, new),
    )
    return Unlocked(
        ticket=ticket_id,
        reason=" ".join(reason.split()),
        paths=list(done.paths),
        test_ids=list(done.test_ids),
        config=done.config,
        phases=list(done.phases),
    )
