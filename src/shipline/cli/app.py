"""The `shipline` command: parses arguments, calls `shipline.api`, prints. Nothing more.

Tables and panels come from `render` (rich); `--json` prints the API's views as JSON. Each
command imports the API when it runs: the API loads the store and the engine, and
`shipline --help` should not wait for them. Piped or redirected, output is read by scripts and
grep: there an error is one line and a table row is never wrapped or cut to the terminal's width.

Most commands are short: the cyclic garbage collector is off for them (it only slows the
imports down), and back on, with the start-up's objects frozen out of its way, for the long
ones (`run`, `work`, `demo`).
"""

from __future__ import annotations

import functools
import gc
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Literal, TextIO

import typer
from rich.console import Console
from rich.markup import escape

from shipline import __version__
from shipline.cli import render
from shipline.errors import ShiplineError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from shipline.api import DemoReport, Project

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
tests_app = typer.Typer(help="The tests a ticket's tests phase locked.", no_args_is_help=True)
app.add_typer(tests_app, name="tests")

# Wider than any row shipline prints, so rich never wraps or ellipsizes a cell ("hotf…").
PIPED_WIDTH = 1_000_000


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no stream, or a closed one
        return False


def _console(stream: TextIO, *, stderr: bool = False) -> Console:
    """The terminal's rich console; piped, the same tables in one very wide layout.

    Rich sizes a console from COLUMNS or from whichever standard stream is a terminal, so
    `shipline ticket list | grep` would otherwise wrap and cut cells to the width of the
    terminal the pipe runs in. The piped layout keeps rich's rows (the same cells, the same
    separators, one line per row) rather than a second, tab-separated format to maintain.
    """
    if _is_tty(stream):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPED_WIDTH)


console = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)

# shipline.api.GroupBy, spelled out so that `shipline --help` need not import the API.
CostBy = Literal["phase", "model", "provider", "day", "tier", "ticket"]
# How many tickets `ticket list` shows unless told otherwise (--limit, --all).
DEFAULT_LIMIT = 50


class Globals:
    config: Path | None = None
    db: str | None = None


def _project(*, read_only: bool = False) -> Project:
    """The project and its store; `read_only` for the commands that only read (they do not
    wait for another process's write lock on SQLite)."""
    from shipline import api

    return api.open_project(Path.cwd(), config=Globals.config, db=Globals.db, read_only=read_only)


def _long_running() -> None:
    """Before a long loop: the garbage collector back on, the start-up's objects frozen."""
    gc.freeze()
    gc.enable()


def _print_notice(message: str) -> None:
    """A worker waiting out a store fault (a lock, a full disk): said, not fatal."""
    err.print(f"[yellow]{escape(message)}[/]", highlight=False)


def _print_json(data: BaseModel | Sequence[BaseModel]) -> None:
    plain = (
        [view.model_dump(mode="json") for view in data]
        if isinstance(data, Sequence)
        else data.model_dump(mode="json")
    )
    sys.stdout.write(json.dumps(plain, indent=2) + "\n")


def _print_event(ticket_id: int, kind: str, message: str) -> None:
    render.print_event(console, ticket_id, kind, message)


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


INIT_HELP = (
    "Write shipline.toml and create the store (.shipline/shipline.db).\n\n"
    "init looks at the repository (it runs nothing) and writes, with a comment on every key: "
    "\\[judge] command, the project's test command (a Makefile `test` target, pytest on the "
    "project's venv if it has one, `go test ./...`, `cargo test` or `npm test`, preferred in "
    "that order; the others found are listed in the comments); \\[merge] target, the branch "
    "checked out now; \\[workspaces], where each ticket's git worktree goes and how it is set "
    "up. With no test command found, \\[judge] command is empty: code phases are then judged "
    "on their text alone and nothing is applied to the repository.\n\n"
    "An existing shipline.toml is never changed: init prints the sections it lacks, to add by "
    "hand. The store is created (or migrated) either way, and .shipline/ goes in .gitignore."
)


@app.command(help=INIT_HELP)
def init(
    path: Annotated[Path, typer.Argument(help="Project folder (a git repo).")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write shipline.toml (the judge, merge target and worktrees detected) and the store."""
    from shipline import api

    done = api.init_project(path.resolve(), db=Globals.db)
    if as_json:
        _print_json(done)
        return
    if done.created:
        console.print(f"wrote {done.config}; store ready at {done.store_url}", markup=False)
    else:
        console.print(
            f"kept the existing {done.config} (init never changes it); "
            f"store ready at {done.store_url}",
            markup=False,
        )
    chosen = done.detected[0] if done.detected else None
    if done.judge:
        found = chosen is not None and chosen.command == done.judge
        why = f" ({chosen.tool}: {chosen.evidence})" if chosen and found else ""
        console.print(f"judge: {done.judge}{why}", markup=False)
    elif chosen is None:
        console.print(
            "no test command detected (looked for a Makefile test target, pytest, go.mod, "
            "Cargo.toml, package.json scripts.test): [judge] command is empty. Without a judge, "
            "code phases (tests, implement, fix-ci) are judged on their text alone and nothing "
            "is applied to the repository. Set [judge] command in shipline.toml to your CI "
            "command to turn them on.",
            markup=False,
        )
    else:
        why = "see the note below" if done.created else "the existing shipline.toml was kept"
        console.print(
            f"judge: none. Detected {chosen.command} ({chosen.evidence}), not set: {why}. "
            "Without a judge, code phases are judged on their text alone and nothing is "
            "applied to the repository.",
            markup=False,
        )
    others = [c for c in done.detected if c.command != done.judge]
    if done.judge and others:
        listed = ", ".join(f"{c.command} ({c.evidence})" for c in others)
        console.print(f"also found: {listed}; see the comments in shipline.toml", markup=False)
    console.print(f"merge target: {done.target}", markup=False)
    for note in done.notes:
        console.print(f"note: {note}", markup=False)
    if done.missing:
        names = ", ".join(f"[{name}]" for name in done.missing)
        console.print(
            f"\nshipline.toml has no {names} (their defaults apply). To set them, add:\n",
            markup=False,
        )
        console.print(done.suggestion, markup=False, highlight=False, soft_wrap=True)


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
    from shipline import api

    text = api.read_text_file(body_file) if body_file else body
    ticket = api.add_ticket(
        _project(), kind=kind, title=title, body=text, lane=lane, sensitive=sensitive
    )
    if as_json:
        _print_json(ticket)
    else:
        console.print(f"added ticket #{ticket.id} ({kind}, lane {lane}): {title}")


@ticket_app.command("list")
def ticket_list(
    status: Annotated[str | None, typer.Option(help="Only tickets with this status.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="Show the newest N tickets (oldest first).")
    ] = DEFAULT_LIMIT,
    show_all: Annotated[bool, typer.Option("--all", help="Show every ticket.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List tickets with their status, phase, attempts, tokens and cost (the newest 50)."""
    from shipline import api

    store = _project(read_only=True).store
    rows = api.list_tickets(store, status, limit=None if show_all else limit)
    hidden = 0
    if not show_all and len(rows) == limit:
        hidden = api.count_tickets(store, status) - len(rows)
    if as_json:
        _print_json(rows)
    elif not rows:
        console.print("no tickets yet: add one with `shipline ticket add`")
    else:
        console.print(render.ticket_table(rows))
    if hidden:  # with --json on stderr, so that stdout stays one JSON document
        (err if as_json else console).print(
            f"… and {hidden} older ticket(s) not shown: --limit N, or --all", highlight=False
        )


@ticket_app.command("show")
def ticket_show(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    deliverable: Annotated[
        str | None,
        typer.Option(
            help="Print this deliverable's text (e.g. spec.md, or a phase name; ci.log: what "
            "fix-ci was handed)."
        ),
    ] = None,
) -> None:
    """Phases, attempts, verdicts with objections, models, tokens, cost, timings."""
    from shipline import api

    store = _project(read_only=True).store
    if deliverable:
        sys.stdout.write(api.deliverable_text(store, ticket_id, deliverable))
        return
    detail = api.ticket_detail(store, ticket_id)
    if as_json:
        _print_json(detail)
    else:
        console.print(render.ticket_panel(detail))


@route_app.command("explain")
def route_explain(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """For each phase: the tier, the provider that would be called first, why, and fallbacks."""
    from shipline import api

    explained = api.explain_route(_project(), ticket_id)
    if as_json:
        _print_json(explained)
    else:
        console.print(render.route_panel(explained))


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
    from shipline import api

    report = api.cost_report(_project(read_only=True).store, ticket_id=ticket, by=by)
    if as_json:
        _print_json(report)
    elif report.total.calls == 0:
        console.print("no provider calls recorded yet")
    else:
        console.print(render.cost_table(report))


@app.command()
def run(
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker threads.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress lines.")] = False,
) -> None:
    """Work until nothing runnable is left, with live progress."""
    from shipline import api

    project = _project()
    stop = threading.Event()
    _stop_on_sigint(stop)
    _long_running()
    with console.status("working…", spinner="dots"):
        done = api.run(
            project,
            workers=workers,
            on_event=None if quiet else _print_event,
            stop=stop,
            on_notice=_print_notice,
        )
    console.print(f"ran {done} step(s)")
    rows = api.list_tickets(project.store, limit=DEFAULT_LIMIT)
    if rows:
        console.print(render.ticket_table(rows))


@app.command()
def work(
    poll: Annotated[
        float | None,
        typer.Option(help="Seconds between polls when idle (default: \\[worker] poll_s)."),
    ] = None,
) -> None:
    """Long-running worker. Ctrl-C stops cleanly after the current step."""
    from shipline import api

    project = _project()
    stop = threading.Event()
    _stop_on_sigint(stop)
    _long_running()
    worker = api.start_worker(project, poll_s=poll, on_event=_print_event, on_notice=_print_notice)
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
    """Accept the waiting phase's deliverable as it stands, or as you edited it.

    With a judge, a code phase is queued: a worker applies, judges and lands it, or refuses it.
    """
    from shipline import api

    text = api.read_text_file(file) if file else None
    approval = api.approve(_project(), ticket_id, text)
    if approval.then is None:
        console.print(f"approved; ticket #{ticket_id} is now {approval.status}")
    else:  # a code phase: a worker applies it, runs the judge and lands the ticket
        line = f"approved; ticket #{ticket_id} is {approval.status}: {approval.then}"
        console.print(escape(line), highlight=False)


@app.command()
def retry(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id (in needs-human).")],
    note: Annotated[str | None, typer.Option(help="Guidance added to the phase's context.")] = None,
    attempts: Annotated[int, typer.Option(help="How many more attempts.")] = 3,
) -> None:
    """Give the waiting phase more attempts, with your note in its context."""
    from shipline import api

    api.retry(_project(), ticket_id, note=note, attempts=attempts)
    console.print(f"ticket #{ticket_id} queued with {attempts} more attempt(s)")


@app.command()
def cancel(ticket_id: Annotated[int, typer.Argument(help="Ticket id.")]) -> None:
    """End a ticket (an epic's unfinished children too)."""
    from shipline import api

    ids = api.cancel(_project(), ticket_id)
    console.print("cancelled " + ", ".join(f"#{i}" for i in ids))


@tests_app.command("unlock")
def tests_unlock(
    ticket_id: Annotated[int, typer.Argument(help="Ticket id.")],
    reason: Annotated[
        str, typer.Option(help="Why the locked tests are wrong (recorded in the history).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Lift a ticket's test locks that turned out wrong; its tests phase runs again."""
    from shipline import api

    done = api.unlock_tests(_project(), ticket_id, reason=reason)
    if as_json:
        _print_json(done)
        return
    ids = f" ({len(done.test_ids)} test id(s))" if done.test_ids else ""
    console.print(
        f"unlocked ticket #{ticket_id}: lifted {', '.join(done.paths) or 'no test file'}{ids} "
        f"and {done.config} test configuration lock(s); queued to run "
        f"{' → '.join(done.phases)} again"
    )


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
    from shipline import api

    out = err if as_json else console  # with --json, stdout holds the JSON alone

    def ready(root: Path) -> None:
        out.print(f"sample repo: {root}")
        if not replay:
            out.print(
                "running on the embedded SmolLM2-135M (llama.cpp, CPU); "
                "this takes a couple of minutes…"
            )

    _long_running()
    with out.status("working…", spinner="dots"):
        report = api.run_demo(
            directory,
            replay=replay,
            on_ready=ready,
            on_event=lambda t, k, msg: render.print_event(out, t, k, msg),
        )
    if as_json:
        _print_json(report)
        return
    console.print(render.demo_table(report))
    _print_demo_outcome(report)


def _print_demo_outcome(report: DemoReport) -> None:
    """Below the demo's table: what reached the sample's main branch, and what to look at."""
    say = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
    if not report.judge:
        say(
            "no judge: pytest is not installed with shipline, so code phases were judged on "
            "their text alone and nothing was applied to the sample repo (pip install pytest)."
        )
    elif report.commits:
        say(f"merged into {report.target}, one squashed commit per ticket that changed code:")
        for commit in report.commits:
            say(f"  {commit.sha[:10]} {commit.subject}")
        if report.target_green is not None:
            state = "pass" if report.target_green else "FAIL"
            say(f"the sample's tests on {report.target}: {state} (judge: {report.judge})")
    else:
        say(f"nothing was merged into {report.target} (judge: {report.judge}).")
    say(f"finished in {report.seconds:.1f}s. The sample repo is {report.dir}:")
    say(f"  cd {report.dir} && git log --oneline {report.target} && shipline ticket show 1")
    if not report.replay:
        waiting = sum(1 for t in report.tickets if t.status == "needs-human")
        say(
            f"{waiting} of {len(report.tickets)} tickets stopped in needs-human. That is "
            "expected: a 135M model rarely writes a spec that passes the deterministic checks, "
            "or tests and code that the judge (the sample's pytest suite) accepts, and shipline "
            "hands off instead of grinding on. Point [tiers] in shipline.toml at a stronger model "
            "(docs/config.md), or run `shipline demo --replay` to see the whole path."
        )


@app.command()
def workspaces(
    do_prune: Annotated[
        bool,
        typer.Option("--prune", help="Remove finished tickets' worktrees past retention."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Ticket worktrees: state, branch and disk use; --prune removes what is no longer needed."""
    from shipline import api

    listed = api.workspaces(_project(), prune=do_prune)
    if as_json:
        _print_json(listed)
        return
    for row in listed.removed:
        console.print(f"removed {row.path} (ticket #{row.ticket}, {row.state})")
    if listed.workspaces:
        console.print(render.workspace_table(listed.workspaces))
    elif not listed.removed:
        console.print("no ticket worktrees (they are made when \\[judge] command is set)")


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the config, the store (its schema, its pages, its disk), git and the judge
    command. Exit 0 when all is well, 1 when something needs fixing."""
    from shipline import api

    report = api.doctor(Path.cwd(), config=Globals.config, db=Globals.db)
    if as_json:
        _print_json(report)
    else:
        console.print(render.doctor_table(report))
    if not report.ok:
        raise typer.Exit(1)


def main() -> None:
    gc.disable()  # a short command; `_long_running` turns it back on
    try:
        app()
    except ShiplineError as exc:
        message = str(exc)
        if not _is_tty(sys.stderr):  # one line for scripts and logs, whatever its length
            message = " ".join(line.strip() for line in message.splitlines() if line.strip())
        err.print(f"[bold red]error:[/] {type(exc).__name__}: {escape(message)}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
