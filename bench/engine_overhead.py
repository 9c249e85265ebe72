"""Benchmark: per-step overhead of the ticket engine against LangGraph, DBOS and bare SQLite.

The same 6-phase scripted pipeline (discovery, techspec, plan, tests, implement, review) runs
over N tickets (default 200) through each engine, one after another in this process, each in
its own fresh temp dir and SQLite file:

- shipline: the real engine. A temp project whose shipline.toml points every tier at a
  scripted provider; N feature tickets made with `create_ticket`; one
  `Worker.run_until_idle()`. Every step claims with a lease (BEGIN IMMEDIATE) and a
  heartbeat thread, loads its inputs, renders the Jinja prompt, calls the producer, records
  the call, commits the attempt, runs the deterministic checks, asks the validator (one
  more recorded call) and commits the verdict with the ticket's transition.
- LangGraph + SqliteSaver: a StateGraph of 6 nodes in a line, invoked once per ticket with
  its own thread_id and `durability="sync"` (each step's checkpoint is written before the
  next step starts, as shipline does).
- DBOS 3.x on its SQLite system database: a workflow calling 6 `@DBOS.step()`s, per ticket.
- floor: bare sqlite3, one `BEGIN IMMEDIATE; INSERT; COMMIT` per step.

Every engine gets the same replies: the demo's recorded answers for the feature ticket
"Add a --shout flag to greet" (`src/shipline/demo/replay.yaml`), minus the rule that makes
techspec fail its first attempt, so every ticket is exactly 6 steps (the step count is
still taken from the store, not assumed). Every SQLite file runs WAL with
synchronous=NORMAL, shipline's own setting (LangGraph and DBOS are set to match).

Timed: running the tickets only. Opening the store, migrating, compiling the graph,
launching DBOS and creating shipline's tickets happen before the clock starts (shipline's
ticket creation is reported separately). Per step = wall seconds / steps; the CPU columns
are process CPU time (all threads) / steps, which a loaded machine disturbs less. Ratios
matter, not absolute times: the machine is shared and noisy, so all engines run in one
invocation. Without --profile the default run takes about a minute on 2 busy cores.

    python bench/engine_overhead.py [--tickets 200] [--only shipline,floor] [--profile]

Peers come from the `bench` extra (`pip install -e '.[bench]'`); a peer that is missing
or fails is reported in its row and the others still run. `--profile` runs shipline again
under cProfile and prints where its time goes. Writes bench/results/engine_overhead.json.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import sqlite3
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shipline.config import scripted_toml
from shipline.demo.sample import DEMO_TICKETS, REPLAY_SCRIPT

PHASES = ["discovery", "techspec", "plan", "tests", "implement", "review"]
TICKET = next(t for t in DEMO_TICKETS if t["kind"] == "feature")
RESULTS = Path(__file__).resolve().parent / "results" / "engine_overhead.json"
ENGINES = ["shipline", "langgraph", "dbos", "floor"]


@dataclass
class Result:
    engine: str
    status: str  # ok | unavailable | error
    steps: int = 0
    seconds: float = 0.0  # wall
    cpu_seconds: float = 0.0  # process CPU time (all threads) over the same span
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_step_us(self) -> float | None:
        return self.seconds / self.steps * 1e6 if self.status == "ok" and self.steps else None

    @property
    def cpu_per_step_us(self) -> float | None:
        ok = self.status == "ok" and self.steps
        return self.cpu_seconds / self.steps * 1e6 if ok else None


# -- the script ------------------------------------------------------------------------------


def load_script() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The feature ticket's rules from replay.yaml, without techspec's failing attempt 1.

    Returns the rules (for shipline's scripted provider) and phase → reply (for the peers).
    """
    rules = yaml.safe_load(REPLAY_SCRIPT.read_text(encoding="utf-8"))["rules"]
    kept = [
        r
        for r in rules
        if (r.get("role") == "validator")
        or (r.get("kind") == "feature" and r.get("title") == "shout" and r.get("attempt") != 1)
    ]
    replies = {r["phase"]: r["reply"] for r in kept if r.get("role") == "producer"}
    missing = [p for p in PHASES if p not in replies]
    if missing:
        raise SystemExit(f"replay.yaml has no producer reply for {missing}")
    return kept, replies


class Clock:
    """Wall and process CPU time (all threads) from construction to `stop()`."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def wal_normal(conn: Any) -> None:
    """shipline's durability setting, applied to a DB-API sqlite3 connection."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


# -- shipline ----------------------------------------------------------------------------------

SHIPLINE_CONFIG = (
    scripted_toml("script", "bench-script.yaml")
    + """
[worker]
poll_s = 0.01
"""
)


def _shipline_project(tmp: Path, rules: list[dict[str, Any]], tickets: int) -> tuple[Any, float]:
    from shipline.engine.project import open_project
    from shipline.engine.tickets import NewTicket, create_ticket

    (tmp / "shipline.toml").write_text(SHIPLINE_CONFIG, encoding="utf-8")
    (tmp / "bench-script.yaml").write_text(yaml.safe_dump({"rules": rules}), encoding="utf-8")
    project = open_project(tmp, create=True)  # a new project: its store too
    project.router  # noqa: B018  (build the provider and parse the script before the clock)
    started = time.perf_counter()
    for i in range(tickets):
        new = NewTicket(kind="feature", title=f"{TICKET['title']} #{i + 1}", body=TICKET["body"])
        create_ticket(project.store, project.settings, new)
    return project, time.perf_counter() - started


def _count_statements(engine: Any) -> dict[str, int]:
    from sqlalchemy import event

    counts: dict[str, Any] = {"statements": 0, "transactions": 0, "by_statement": {}}

    @event.listens_for(engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        counts["statements"] += 1
        words = statement.split()
        verb = words[0]
        table = {"SELECT": "FROM", "INSERT": "INTO", "UPDATE": "UPDATE"}.get(verb)
        key = f"{verb} {words[words.index(table) + 1]}" if table in words else verb
        counts["by_statement"][key] = counts["by_statement"].get(key, 0) + 1

    @event.listens_for(engine, "begin")
    def _count_begin(_conn: Any) -> None:  # shipline sends BEGIN IMMEDIATE to the driver
        counts["transactions"] += 1

    return counts


def _shipline_breakdown(project: Any, seconds: float) -> dict[str, Any]:
    from sqlalchemy import func, select

    from shipline.store import models as m

    with project.store.session() as session:
        steps = session.scalar(select(func.count()).select_from(m.Attempt)) or 0
        statuses = dict(
            session.execute(select(m.Ticket.status, func.count()).group_by(m.Ticket.status)).all()
        )
        by_role = {
            role: (count, (ms or 0.0) / 1000)
            for role, count, ms in session.execute(
                select(m.Call.role, func.count(), func.sum(m.Call.latency_ms)).group_by(m.Call.role)
            ).all()
        }
    provider_s = sum(s for _, s in by_role.values())
    return {
        "steps": steps,
        "ticket_statuses": statuses,
        "calls": {role: {"count": c, "seconds": s} for role, (c, s) in by_role.items()},
        "provider_seconds": provider_s,
        "engine_seconds": seconds - provider_s,
    }


def run_shipline(tmp: Path, tickets: int, rules: list[dict[str, Any]]) -> Result:
    from shipline.engine.worker import Worker

    project, enqueue_s = _shipline_project(tmp, rules, tickets)
    try:
        counts = _count_statements(project.store.engine)
        worker = Worker(project)
        clock = Clock()
        ran = worker.run_until_idle()
        seconds, cpu = clock.stop()
        counts = {**counts, "by_statement": dict(counts["by_statement"])}  # before our queries
        extra = _shipline_breakdown(project, seconds)
    finally:
        project.close()
    extra |= {"attempts_run": ran, "enqueue_seconds": enqueue_s, **counts}
    done = extra["ticket_statuses"].get("done", 0)
    note = f"{done}/{tickets} done"
    status = "ok" if done == tickets else "error"
    return Result("shipline", status, extra["steps"], seconds, cpu, note, extra)


# Where a shipline step spends its time: label → (path fragment, function name) pairs, their
# cumulative times summed. Indented rows are part of the row above them.
_C_EXECUTE = "<method 'execute' of 'sqlite3.Cursor' objects>"
_C_COMMIT = "<method 'commit' of 'sqlite3.Connection' objects>"
PROFILE_BUCKETS: list[tuple[str, list[tuple[str, str]]]] = [
    ("claim_next (claim + lease, 1 txn)", [("engine/worker.py", "claim_next")]),
    (
        "Heartbeat thread start + stop",
        [("engine/worker.py", "__enter__"), ("engine/worker.py", "__exit__")],
    ),
    ("live_claims (idle check, once)", [("engine/worker.py", "live_claims")]),
    ("AttemptRunner.run", [("engine/loop.py", "run")]),
    ("  load_context (1 txn)", [("engine/loop.py", "load_context")]),
    ("  _produce", [("engine/loop.py", "_produce")]),
    ("    build_prompt (Jinja + token budget)", [("engine/prompt.py", "build_prompt")]),
    ("    Router.complete + call record txn", [("engine/loop.py", "_produce|complete")]),
    ("  2 session exits: commit load + attempt", [("engine/loop.py", "run|__exit__")]),
    ("  phase check (deterministic)", [("shipline/phases/", "check")]),
    ("  _validate", [("engine/loop.py", "_validate")]),
    ("    render_blocks (validator prompt)", [("engine/prompt.py", "render_blocks")]),
    ("    Router.complete + call record txn", [("engine/loop.py", "_validate|complete")]),
    ("  _commit_verdict (1 txn)", [("engine/loop.py", "_commit_verdict")]),
    (
        "    lifecycle: decide + apply the transition",
        [
            ("engine/loop.py", "_commit_verdict|decide_verdict"),
            ("engine/loop.py", "_commit_verdict|apply"),
        ],
    ),
    ("across the above:", []),
    ("  scripted provider .complete", [("providers/scripted.py", "complete")]),
    ("  call record (1 txn per call)", [("engine/loop.py", "record")]),
    ("  renew_lease (fence UPDATE, x2)", [("engine/loop.py", "renew_lease")]),
    ("  Store.session exit (flush + COMMIT)", [("store/db.py", "session|__exit__")]),
    ("  SQLAlchemy lazy loads", [("orm/strategies.py", "_load_for_state")]),
    ("  SQLAlchemy flush (unit of work)", [("orm/session.py", "_flush")]),
    ("  sqlite3 execute + commit (C)", [("~", _C_EXECUTE), ("~", _C_COMMIT)]),
]


def _bucket_seconds(raw: dict[Any, Any], where: str, func: str) -> float:
    """Cumulative seconds of `func` defined in a file whose path contains `where`.

    `caller|callee`: the callee's time when called from `caller` (in a file matching `where`).
    """
    total = 0.0
    if "|" in func:
        caller, callee = func.split("|")
        for (_file, _line, name), (_cc, _nc, _tt, _ct, callers) in raw.items():
            if name != callee:
                continue
            for (cfile, _cline, cname), stat in callers.items():
                if cname == caller and where in cfile:
                    total += stat[3]
        return total
    for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in raw.items():
        if name == func and where in file:
            total += ct
    return total


def _by_package(raw: dict[Any, Any]) -> list[tuple[str, float]]:
    """Own (not cumulative) time summed by top-level package: who burns the CPU."""
    totals: dict[str, float] = {}
    for (fname, _line, name), (_cc, _nc, tt, _ct, _callers) in raw.items():
        if fname == "~":
            package = "sqlite3 (C)" if "sqlite3" in name else "builtins (C)"
        elif "site-packages" in fname:
            package = fname.split("site-packages/")[1].split("/")[0]
        elif "/shipline/" in fname:
            package = "shipline"
        else:
            package = "stdlib"
        totals[package] = totals.get(package, 0.0) + tt
    return sorted(totals.items(), key=lambda kv: -kv[1])


def profile_shipline(
    tmp: Path, tickets: int, rules: list[dict[str, Any]], top: int, cpu_us: float | None
) -> str:
    """Run shipline again under cProfile (CPU time) and say where a step's time goes.

    cProfile slows everything down; `cpu_us` (CPU µs/step of the unprofiled run) scales
    each row's share back to an estimate of its real cost.
    """
    from shipline.engine.worker import Worker

    project, _ = _shipline_project(tmp, rules, tickets)
    profiler = cProfile.Profile(time.process_time)
    try:
        worker = Worker(project)
        profiler.enable()
        worker.run_until_idle()
        profiler.disable()
        steps = _shipline_breakdown(project, 0.0)["steps"] or 1
    finally:
        project.close()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    raw = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    print(
        f"shipline under cProfile (CPU time): {steps} steps, {total / steps * 1e6:,.0f} µs/step "
        "profiled; the last column scales each share to the unprofiled CPU µs/step",
        file=out,
    )
    scale = cpu_us or 0.0
    print(f"{'':<42}{'profiled':>10}{'share':>8}{'≈ real µs':>11}", file=out)
    for label, where in PROFILE_BUCKETS:
        if not where:
            print(label, file=out)
            continue
        seconds = sum(_bucket_seconds(raw, file, func) for file, func in where)
        share = seconds / total
        real = f"{share * scale:>11,.0f}" if scale else ""
        print(f"{label:<42}{seconds / steps * 1e6:>10,.0f}{share:>8.0%}{real}", file=out)
    print("\nown time by package:", file=out)
    for package, seconds in _by_package(raw)[:8]:
        share = seconds / total
        real = f"{share * scale:>11,.0f}" if scale else ""
        print(f"  {package:<40}{seconds / steps * 1e6:>10,.0f}{share:>8.0%}{real}", file=out)
    print("", file=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    return out.getvalue()


# -- LangGraph ---------------------------------------------------------------------------------


class PipelineState(TypedDict, total=False):
    ticket: int
    discovery_out: str
    techspec_out: str
    plan_out: str
    tests_out: str
    implement_out: str
    review_out: str


def run_langgraph(tmp: Path, tickets: int, replies: dict[str, str]) -> Result:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph

    def node(phase: str) -> Callable[[PipelineState], dict[str, str]]:
        def produce(_state: PipelineState) -> dict[str, str]:
            return {f"{phase}_out": replies[phase]}

        return produce

    builder = StateGraph(PipelineState)
    previous = START
    for phase in PHASES:
        builder.add_node(phase, node(phase))
        builder.add_edge(previous, phase)
        previous = phase
    builder.add_edge(previous, END)

    conn = sqlite3.connect(tmp / "langgraph.db", check_same_thread=False)
    wal_normal(conn)
    saver = SqliteSaver(conn)
    saver.setup()
    graph = builder.compile(checkpointer=saver)
    try:
        clock = Clock()
        for i in range(tickets):
            config = {"configurable": {"thread_id": f"ticket-{i + 1}"}}
            state = graph.invoke({"ticket": i + 1}, config, durability="sync")
            if state.get("review_out") != replies["review"]:
                return Result("langgraph", "error", note=f"ticket {i + 1} did not finish")
        seconds, cpu = clock.stop()
        checkpoints = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    finally:
        conn.close()
    note = f"SqliteSaver, durability=sync, {checkpoints} checkpoints"
    steps = tickets * len(PHASES)
    return Result("langgraph", "ok", steps, seconds, cpu, note, {"checkpoints": checkpoints})


# -- DBOS --------------------------------------------------------------------------------------


def run_dbos(tmp: Path, tickets: int, replies: dict[str, str]) -> Result:
    from dbos import DBOS
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    # DBOS opens its SQLite file in rollback-journal mode with synchronous=FULL; give it
    # shipline's setting for a like-for-like comparison (removed again below).
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        if isinstance(dbapi_conn, sqlite3.Connection):
            wal_normal(dbapi_conn)

    event.listen(Engine, "connect", _pragmas)
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(
        config={
            "name": "shipline-bench",
            "system_database_url": f"sqlite:///{tmp / 'dbos.sqlite'}",
            "run_admin_server": False,
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def produce(phase: str) -> str:
        return replies[phase]

    @DBOS.workflow()
    def pipeline(ticket: int) -> str:
        out = ""
        for phase in PHASES:
            out = produce(phase)
        return out

    try:
        DBOS.launch()
        clock = Clock()
        for i in range(tickets):
            if pipeline(i + 1) != replies["review"]:
                return Result("dbos", "error", note=f"ticket {i + 1} did not finish")
        seconds, cpu = clock.stop()
        with sqlite3.connect(tmp / "dbos.sqlite") as conn:
            outputs = conn.execute("SELECT count(*) FROM operation_outputs").fetchone()[0]
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        DBOS.destroy(destroy_registry=True)
        event.remove(Engine, "connect", _pragmas)
    note = f"SQLite system database ({journal}), {outputs} step outputs"
    extra = {"operation_outputs": outputs, "journal_mode": journal}
    return Result("dbos", "ok", outputs, seconds, cpu, note, extra)


# -- the floor ---------------------------------------------------------------------------------


def run_floor(tmp: Path, tickets: int, replies: dict[str, str]) -> Result:
    conn = sqlite3.connect(tmp / "floor.db", isolation_level=None)
    try:
        wal_normal(conn)
        conn.execute(
            "CREATE TABLE steps (id INTEGER PRIMARY KEY, ticket INTEGER, phase TEXT, text TEXT)"
        )
        clock = Clock()
        for i in range(tickets):
            for phase in PHASES:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO steps (ticket, phase, text) VALUES (?, ?, ?)",
                    (i + 1, phase, replies[phase]),
                )
                conn.execute("COMMIT")
        seconds, cpu = clock.stop()
        steps = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    finally:
        conn.close()
    return Result("floor", "ok", steps, seconds, cpu, "sqlite3: BEGIN IMMEDIATE; INSERT; COMMIT")


# -- driver ------------------------------------------------------------------------------------


def run_engine(name: str, tickets: int, rules: list[dict[str, Any]], replies: dict[str, str]):
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        try:
            if name == "shipline":
                return run_shipline(Path(tmp), tickets, rules)
            runner = {"langgraph": run_langgraph, "dbos": run_dbos, "floor": run_floor}[name]
            return runner(Path(tmp), tickets, replies)
        except ImportError as exc:
            return Result(
                name, "unavailable", note=f"not installed ({exc.name}): pip install -e '.[bench]'"
            )
        except Exception as exc:
            traceback.print_exc()
            return Result(name, "error", note=f"{type(exc).__name__}: {exc}"[:200])


def ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


def render(results: list[Result], tickets: int) -> None:
    wall = {r.engine: r.per_step_us for r in results}
    cpu = {r.engine: r.cpu_per_step_us for r in results}
    rows = []
    for r in results:
        us, cpu_us = r.per_step_us, r.cpu_per_step_us
        rows.append(
            [
                r.engine,
                r.status,
                str(r.steps) if r.steps else "-",
                f"{r.seconds:.2f}" if r.status == "ok" else "-",
                f"{us:,.0f}" if us is not None else "-",
                _fmt(ratio(us, wall.get("floor"))),
                _fmt(ratio(us, wall.get("shipline"))),
                f"{cpu_us:,.0f}" if cpu_us is not None else "-",
                _fmt(ratio(cpu_us, cpu.get("shipline"))),
            ]
        )
    headers = [
        "engine",
        "status",
        "steps",
        "wall s",
        "µs/step",
        "× floor",
        "× shipline",
        "CPU µs/step",
        "CPU × shipline",
    ]
    title = f"engine overhead: 6-phase scripted pipeline, {tickets} tickets"
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i < 2 else "right", no_wrap=True)
        for row in rows:
            table.add_row(*row)
        console = Console()
        console.width = max(console.width, 110)
        console.print(table)
    except ImportError:
        print(title)
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    for r in results:
        print(f"  {r.engine:<10} {r.note}")


def _fmt(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def render_breakdown(result: Result) -> None:
    x = result.extra
    if result.status != "ok" or not result.steps:
        return
    steps = result.steps
    print(f"\nshipline per step ({steps} steps, {result.seconds:.2f} s):")
    print(f"  wall                 {result.seconds / steps * 1e6:9,.0f} µs")
    for role, call in sorted(x["calls"].items()):
        print(
            f"  {role + ' calls':<20} {call['seconds'] / steps * 1e6:9,.0f} µs"
            f"  ({call['count'] / steps:.1f} per step, latency_ms in the calls table)"
        )
    print(f"  engine (the rest)    {x['engine_seconds'] / steps * 1e6:9,.0f} µs")
    print(
        f"  SQL: {x['statements'] / steps:.1f} statements and "
        f"{x['transactions'] / steps:.1f} transactions per step"
    )
    shown = sorted(x["by_statement"].items(), key=lambda kv: -kv[1])
    print("    " + ", ".join(f"{key} {n / steps:.1f}" for key, n in shown))
    print(f"  ticket creation (not timed above): {x['enqueue_seconds'] / steps * 1e6:,.0f} µs/step")


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {}
    for dist in ("shipline", "sqlalchemy", "langgraph", "langgraph-checkpoint-sqlite", "dbos"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tickets", type=int, default=200, help="tickets per engine")
    parser.add_argument(
        "--only", default=",".join(ENGINES), help=f"comma-separated subset of {ENGINES}"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run shipline again under cProfile and print"
    )
    parser.add_argument("--profile-top", type=int, default=30)
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    if args.tickets < 1:
        parser.error("--tickets must be >= 1")
    engines = [e.strip() for e in args.only.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s) {unknown}; choose from {ENGINES}")

    rules, replies = load_script()
    results = []
    for name in engines:
        print(f"running {name} ({args.tickets} tickets)…", file=sys.stderr, flush=True)
        results.append(run_engine(name, args.tickets, rules, replies))
    render(results, args.tickets)
    for r in results:
        if r.engine == "shipline":
            render_breakdown(r)

    profile = None
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
            cpu_us = next((r.cpu_per_step_us for r in results if r.engine == "shipline"), None)
            profile = profile_shipline(Path(tmp), args.tickets, rules, args.profile_top, cpu_us)
        print("\n" + profile)

    per = {r.engine: r.per_step_us for r in results}
    cpu = {r.engine: r.cpu_per_step_us for r in results}
    payload = {
        "benchmark": "engine_overhead",
        "tickets": args.tickets,
        "phases": PHASES,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version,
        },
        "versions": _versions(),
        "results": [
            {
                **asdict(r),
                "per_step_us": r.per_step_us,
                "ratio_to_floor": ratio(r.per_step_us, per.get("floor")),
                "ratio_to_shipline": ratio(r.per_step_us, per.get("shipline")),
                "cpu_per_step_us": r.cpu_per_step_us,
                "cpu_ratio_to_shipline": ratio(r.cpu_per_step_us, cpu.get("shipline")),
            }
            for r in results
        ],
        "shipline_profile": profile,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
