"""The `shipline` command: parses arguments, calls the engine, prints. Nothing more."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.markup import escape

from shipline import __version__
from shipline.errors import ShiplineError

app = typer.Typer(
    help="shipline: route tickets through focused agent phases, validated, with handoff.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
ticket_app = typer.Typer(help="Add, list and inspect tickets.", no_args_is_help=True)
app.add_typer(ticket_app, name="ticket")
route_app = typer.Typer(help="How tickets are routed to providers.", no_args_is_help=True)
app.add_typer(route_app, name="route")

console = Console()
err = Console(stderr=True)

# shipline.costs.GroupBy, spelled out so that `shipline --help` need not import the store.
CostBy = Literal["phase", "model", "provider", "day", "tier", "ticket"]


class Globals:
    config: Path | None = None
    db: str | None = None


def _project(require: bool = True) -> Any:
    from shipline.engine.project import open_project

    return open_project(Path.cwd(), config=Globals.config, db=Globals.db, require=require)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _version(value: bool) -> None:
    if value:
        console.print(f"shipline {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[Path | None, typer.Option(help="Path to shipline.toml.")] = None,
    db: Annotated[
        str | None,
        typer.Option(
            help="Store URL, overriding the \\[store] url (sqlite:///… or postgresql://…)."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    Globals.config = config
    Globals.db = db


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Project folder (a git repo).")] = Path("."),
) -> None:
    """Write shipline.toml and create the store (.shipline/shipline.db)."""
    from shipline.engine.setup import init_project

    created, store_url = init_project(path.resolve(), db=Globals.db)
    verb = "wrote" if created else "kept the existing"
    console.print(f"{verb} {path.resolve() / 'shipline.toml'}; store ready at {store_url}")


@ticket_app.command("add")
def ticket_add(
    kind: Annotated[str, typer.Option(help="feature, hotfix or epic.")],
    title: Annotated[str, typer.Option(help="One line.")],
    body_file: Annotated[
        Path | None, typer.Option(help="Markdown file with the ticket's body.")
    ] = None,
    body: Annotated[str, typer.Option(help="The body as text (instead of --body-file).")] = "",
    lane: Annotated[int, typer.Option(help="Risk lane: 1 low, 2 core logic, 3 high impact.")] = 2,
    sensitive: Annotated[
        bool, typer.Option(help="Only in-house providers may see this ticket.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Add a ticket; it is routed by kind and lane."""
    from shipline.engine.tickets import NewTicket, create_ticket, read_body_file

    text = read_body_file(body_file) if body_file else body
    project = _project()
    new = NewTicket(kind=kind, title=title, body=text, lane=lane, sensitive=sensitive)
    ticket_id = create_ticket(project.store, project.settings, new)
    if as_json:
        from shipline.engine.tickets import ticket_detail

        _print_json(ticket_detail(project.store, ticket_id))
    else:
        console.print(f"added ticket #{ticket_id} ({kind}, lane {lane}): {title}")


@ticket_app.command("list")
def ticket_list(
    status: Annotated[str | None, typer.Option(help="Only tickets with this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List tickets with their status, phase, attempts, tokens and cost."""
    from shipline.engine.tickets import list_tickets
    from shipline.render import ticket_table

    rows = list_tickets(_project().store, status)
    if as_json:
        _print_json(rows)
    elif not rows:
        console.print("no tickets yet: add one with `shipline ticket add`")
    else:
        console.print(ticket_table(rows))


@ticket_app.command("show")
def ticket_show(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    deliverable: Annotated[
        str | None,
        typer.Option(help="Print this deliverable's text (e.g. spec.md, or a phase name)."),
    ] = None,
) -> None:
    """Phases, attempts, verdicts with objections, models, tokens, cost, timings."""
    from shipline.engine.tickets import deliverable_text, ticket_detail
    from shipline.render import ticket_panel

    project = _project()
    if deliverable:
        sys.stdout.write(deliverable_text(project.store, ticket_id, deliverable))
        return
    detail = ticket_detail(project.store, ticket_id)
    if as_json:
        _print_json(detail)
    else:
        console.print(ticket_panel(detail))


@route_app.command("explain")
def route_explain(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """For each phase: the tier, the provider that would be called first, why, and fallbacks."""
    from shipline.engine.explain import explain_ticket
    from shipline.render import route_panel

    explained = explain_ticket(_project(), ticket_id).as_dict()
    if as_json:
        _print_json(explained)
    else:
        console.print(route_panel(explained))


@app.command()
def cost(
    ticket: Annotated[int | None, typer.Option(help="Only this ticket's calls.")] = None,
    by: Annotated[
        CostBy | None,
        typer.Option(help="Group by phase, model, provider, day (UTC), tier, ticket."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Cost, tokens, calls, fallbacks and errors from the calls table. Unknown prices show so."""
    from shipline.costs import cost_report
    from shipline.render import cost_table

    report = cost_report(_project().store, ticket_id=ticket, by=by).as_dict()
    if as_json:
        _print_json(report)
    elif report["total"]["calls"] == 0:
        console.print("no provider calls recorded yet")
    else:
        console.print(cost_table(report))


@app.command()
def run(
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker threads.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
) -> None:
    """Work until nothing runnable is left, with live progress."""
    from shipline.engine.tickets import list_tickets
    from shipline.engine.worker import run_workers
    from shipline.render import print_event, ticket_table

    project = _project()
    stop = threading.Event()
    _stop_on_sigint(stop)

    def on_event(ticket_id: int, kind: str, message: str) -> None:
        if not quiet:
            print_event(console, ticket_id, kind, message)

    with console.status("working…", spinner="dots"):
        done = run_workers(project, workers, on_event=on_event, stop=stop)
    console.print(f"ran {done} step(s)")
    rows = list_tickets(project.store)
    if rows:
        console.print(ticket_table(rows))


@app.command()
def work(
    poll: Annotated[
        float | None,
        typer.Option(help="Seconds between polls when idle (default: \\[worker] poll_s)."),
    ] = None,
) -> None:
    """Long-running worker. Ctrl-C stops cleanly after the current step."""
    from shipline.engine.worker import Worker
    from shipline.render import print_event

    project = _project()
    if poll is not None and poll > 0:
        project.settings.worker.poll_s = poll
    stop = threading.Event()
    _stop_on_sigint(stop)
    worker = Worker(project, on_event=lambda t, k, msg: print_event(console, t, k, msg))
    console.print(
        f"worker {worker.worker_id} polling {project.store.display_url} "
        "(Ctrl-C to stop after the current step)"
    )
    done = worker.work_forever(stop)
    console.print(f"stopped after {done} attempt(s)")


def _stop_on_sigint(stop: threading.Event) -> None:
    """First Ctrl-C: finish the current step, then stop. Second: stop now."""

    def handler(_sig: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print("stopping after the current step (Ctrl-C again to stop now)")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


@app.command()
def approve(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id (in needs-human).")],
    file: Annotated[
        Path | None, typer.Option(help="Accept this file's text instead (your edited version).")
    ] = None,
) -> None:
    """Accept the waiting phase's deliverable as it stands, or as you edited it."""
    from shipline.engine.lifecycle import approve as approve_ticket
    from shipline.engine.tickets import read_body_file

    project = _project()
    text = read_body_file(file) if file else None
    status = approve_ticket(project.store, project.settings, ticket_id, text)
    console.print(f"approved; ticket #{ticket_id} is now {status}")


@app.command()
def retry(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id (in needs-human).")],
    note: Annotated[str | None, typer.Option(help="Guidance added to the phase's context.")] = None,
    attempts: Annotated[int, typer.Option(help="How many more attempts.")] = 3,
) -> None:
    """Give the waiting phase more attempts, with your note in its context."""
    from shipline.engine.lifecycle import retry as retry_ticket

    retry_ticket(_project().store, ticket_id, note, attempts)
    console.print(f"ticket #{ticket_id} queued with {attempts} more attempt(s)")


@app.command()
def cancel(ticket_id: Annotated[int, typer.Argument(help="Ticket id.")]) -> None:
    """End a ticket (an epic's unfinished children too)."""
    from shipline.engine.lifecycle import cancel as cancel_ticket

    ids = cancel_ticket(_project().store, ticket_id)
    console.print("cancelled " + ", ".join(f"#{i}" for i in ids))


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to create the sample repo (empty).")
    ] = None,
    replay: Annotated[
        bool, typer.Option(help="Use the scripted provider with recorded good answers.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """The main job on embedded defaults: a sample repo, three tickets, the local model."""
    from shipline.demo.run import run_demo

    run_demo(directory, replay=replay, console=console, as_json=as_json)


@app.command()
def workspaces(
    do_prune: Annotated[
        bool,
        typer.Option("--prune", help="Remove finished tickets' worktrees past retention."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Ticket worktrees: state, branch and disk use; --prune removes what is no longer needed."""
    from shipline.render import workspace_table
    from shipline.workspaces.inventory import inventory, prune_workspaces

    project = _project()
    removed = prune_workspaces(project) if do_prune else []
    rows = inventory(project)
    if as_json:
        _print_json({"workspaces": rows, "removed": removed})
        return
    for row in removed:
        console.print(f"removed {row['path']} (ticket #{row['ticket']}, {row['state']})")
    if rows:
        console.print(workspace_table(rows))
    elif not removed:
        console.print("no ticket worktrees (they are made when \\[judge] command is set)")


def main() -> None:
    try:
        app()
    except ShiplineError as exc:
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
