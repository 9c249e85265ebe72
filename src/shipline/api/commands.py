"""What a front-end may do: set up a project, add tickets, run workers, and a human's moves.

Each command delegates to the engine and returns a view or a plain value; none prints.
Progress comes back through `on_event(ticket_id, kind, message)`, which the CLI prints and a
web board would stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from shipline.api.tickets import list_tickets, ticket_detail
from shipline.api.views import (
    Approval,
    DemoCommit,
    DemoReport,
    DemoTicket,
    DetectedTestCommand,
    ProjectSetup,
    TicketDetail,
)
from shipline.config import CONFIG_FILE
from shipline.demo import run as demo
from shipline.demo.sample import DEMO_TICKETS
from shipline.engine import lifecycle, setup, tickets, worker
from shipline.engine.loop import OnEvent
from shipline.engine.project import Project, open_project
from shipline.engine.worker import OnNotice


def init_project(root: Path, *, db: str | None = None) -> ProjectSetup:
    """Write shipline.toml in `root` (unless present: kept unchanged) with the test command
    and branch detected there, and create the store. Idempotent."""
    done = setup.init_project(root, db=db)
    return ProjectSetup(
        config=root / CONFIG_FILE,
        created=done.created,
        store_url=done.store_url,
        judge=done.judge,
        target=done.target,
        detected=[
            DetectedTestCommand(tool=c.tool, command=c.command, evidence=c.evidence)
            for c in done.found
        ],
        notes=list(done.notes),
        missing=list(done.missing),
        suggestion=done.suggestion,
    )


def add_ticket(
    project: Project,
    *,
    kind: str,
    title: str,
    body: str = "",
    lane: int = 2,
    sensitive: bool = False,
) -> TicketDetail:
    """Add a ticket, routed by its kind and lane; the new ticket as `ticket show` has it."""
    new = tickets.NewTicket(kind=kind, title=title, body=body, lane=lane, sensitive=sensitive)
    return ticket_detail(project.store, tickets.create_ticket(project.store, project.settings, new))


def read_text_file(path: Path) -> str:
    """A ticket body or an edited deliverable from a file (`TicketError` when unreadable)."""
    return tickets.read_body_file(path)


def run(
    project: Project,
    *,
    workers: int = 1,
    on_event: OnEvent | None = None,
    stop: threading.Event | None = None,
    on_notice: OnNotice | None = None,
) -> int:
    """Work with `workers` threads until nothing runnable is left. Returns the steps run.
    `on_notice(message)`: a transient store fault being waited out."""
    return worker.run_workers(project, workers, on_event=on_event, stop=stop, on_notice=on_notice)


def start_worker(
    project: Project,
    *,
    poll_s: float | None = None,
    on_event: OnEvent | None = None,
    on_notice: OnNotice | None = None,
) -> worker.Worker:
    """A long-running worker (`work_forever(stop)`), polling every `poll_s` when idle."""
    if poll_s is not None and poll_s > 0:
        project.settings.worker.poll_s = poll_s
    return worker.Worker(project, on_event=on_event, on_notice=on_notice)


def approve(project: Project, ticket_id: int, text: str | None = None) -> Approval:
    """Accept the waiting phase's deliverable (or `text`, the human's edit): the new status,
    and what happens next (a code phase's approval is applied and judged by a worker)."""
    status, then = lifecycle.approve(
        project.store, project.settings, ticket_id, text, repo=Path(project.root)
    )
    return Approval(ticket_id=ticket_id, status=status, then=then)


def retry(project: Project, ticket_id: int, *, note: str | None, attempts: int) -> None:
    """Give the waiting phase `attempts` more tries, with `note` in its context."""
    lifecycle.retry(
        project.store,
        ticket_id,
        note,
        attempts,
        settings=project.settings,
        repo=Path(project.root),
    )


def cancel(project: Project, ticket_id: int) -> list[int]:
    """End a ticket and an epic's unfinished children. The ids cancelled."""
    return lifecycle.cancel(project.store, ticket_id)


def run_demo(
    directory: Path | None,
    *,
    replay: bool,
    on_ready: Callable[[Path], None] | None = None,
    on_event: OnEvent | None = None,
) -> DemoReport:
    """`shipline demo`: the sample repo (in `directory`, or a new temp folder), its three
    tickets, run until idle. `on_ready(root)` is called once the repo exists."""
    started = time.perf_counter()
    root, judge = demo.prepare(directory, replay)
    if on_ready is not None:
        on_ready(root)
    project = open_project(root, create=True)  # the demo's own new project: its store too
    for ticket in DEMO_TICKETS:
        new = tickets.NewTicket(kind=ticket["kind"], title=ticket["title"], body=ticket["body"])
        tickets.create_ticket(project.store, project.settings, new)
    worker.Worker(project, on_event=on_event).run_until_idle()
    rows = []
    merged = []
    for row in list_tickets(project.store):
        detail = ticket_detail(project.store, row.id)
        verdicts = [a.verdict for p in detail.phases for a in p.attempts if a.verdict]
        rows.append(
            DemoTicket(
                **dict(row),
                reached=[p.phase for p in detail.phases if p.attempts],
                objections=sum(len(v.objections) for v in verdicts),
                seconds=sum(p.seconds or 0 for p in detail.phases),
            )
        )
        if detail.merge is not None and detail.merge.commit:
            merged.append((detail.merge.at, row.id, detail.merge.commit))
    subjects = demo.commit_subjects(root) if merged else {}
    commits = [
        DemoCommit(ticket=ticket_id, sha=sha, subject=subjects.get(sha, ""))
        for _, ticket_id, sha in sorted(merged)
    ]
    green = demo.judge_target(root, judge).ok if judge else None
    return DemoReport(
        dir=root,
        replay=replay,
        seconds=time.perf_counter() - started,
        tickets=rows,
        judge=judge,
        target=demo.TARGET,
        commits=commits,
        target_green=green,
    )
