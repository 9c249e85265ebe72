"""How fast the read commands answer, and how that grows with the store.

Builds stores of 100, 10,000 and 100,000 tickets (`shipline init`, then bulk INSERTs of
tickets in every state with their steps, attempts, verdicts, calls and events), then times
each read command as a real subprocess (`python -m shipline …`, output to a pipe): `--help`,
`ticket list`, `ticket list --json`, `ticket show ID`, `cost`, `cost --by phase`, with
three floors (the bare interpreter; typer and rich, which every command imports; SQLAlchemy's
ORM, which every store command imports). Runs are interleaved (round-robin over every
command and store, `--runs` rounds, at least 5); the medians of wall and CPU (user + sys)
time are reported, with the 1-minute load average before and after. Compiled bytecode is
cached in a temporary PYTHONPYCACHEPREFIX and warmed before timing, as an installed
shipline would have it.

    python bench/cli.py                                 # 100, 10k, 100k tickets, 5 rounds
    python bench/cli.py --sizes 100,10000 --runs 7
    python bench/cli.py --checkout before=/tmp/before --checkout after=.   # A/B

JSON goes to bench/results/cli.json (`--json` to change it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "cli.json"
SIZES = (100, 10_000, 100_000)
TOML = """\
[providers.scripted]
kind = "scripted"
script = "script.yaml"

[tiers]
top = ["scripted"]
mid = ["scripted"]
cheap = ["scripted"]
local = ["scripted"]
"""
ROUTES = {
    "feature": ["discovery", "techspec", "plan", "tests", "implement", "review"],
    "hotfix": ["diagnose", "tests", "implement", "review"],
}
MODELS = [("openai", "gpt-4o", "top", 2.5e-6), ("groq", "llama-3.1-8b", "cheap", 5e-8)]
STAMP = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy keeps a UTC datetime in SQLite


def commands(show_id: int) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "ticket list": ["ticket", "list"],
        "ticket list --json": ["ticket", "list", "--json"],
        "ticket show": ["ticket", "show", str(show_id)],
        "cost": ["cost"],
        "cost --by phase": ["cost", "--by", "phase"],
    }


FLOORS = {
    "python (floor)": ["-c", "pass"],
    "typer + rich (floor)": ["-c", "import typer, rich.console"],
    "sqlalchemy.orm (floor)": ["-c", "import sqlalchemy.orm"],
}


# --- the stores ----------------------------------------------------------------------------


def rows(tickets: int, seed: int = 7) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """(table, row) for `tickets` tickets: 80% done, 10% in needs-human, 10% queued; features
    and hotfixes; one attempt a step (every fifth step two), a producer and a validator call
    an attempt, an event a step."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step_id = attempt_id = call_id = event_id = 0
    for ticket_id in range(1, tickets + 1):
        kind = "feature" if ticket_id % 5 < 3 else "hotfix"
        route = ROUTES[kind]
        state = ticket_id % 10
        status = "queued" if state == 0 else "needs-human" if state == 1 else "done"
        reached = 0 if status == "queued" else 2 if status == "needs-human" else len(route)
        at = start + timedelta(seconds=ticket_id * 30)
        stamp = at.strftime(STAMP)
        handoff = "techspec: attempts used up" if status == "needs-human" else None
        yield (
            "tickets",
            (
                ticket_id,
                kind,
                f"ticket {ticket_id}: {rng.choice(['add', 'fix', 'speed up'])} the thing",
                "Some body text that says what the ticket is about.\n" * 3,
                2,
                0,
                status,
                json.dumps(route),
                min(reached, len(route) - 1),
                handoff,
                stamp,
                stamp,
            ),
        )
        event_id += 1
        yield "events", (event_id, ticket_id, "created", f"{kind} route", stamp)
        for position, phase in enumerate(route):
            step_id += 1
            if position < reached:
                step_status = "failed" if status == "needs-human" and position == 1 else "passed"
            else:
                step_status = "pending"
            attempts = 0 if step_status == "pending" else 2 if step_id % 5 == 0 else 1
            if step_status == "failed":
                attempts = 3
            yield (
                "steps",
                (
                    step_id,
                    ticket_id,
                    position,
                    phase,
                    step_status,
                    3,
                    attempts,
                    f"# {phase}\n\nthe accepted {phase}.\n" if step_status == "passed" else None,
                    attempts,
                    0,
                    stamp if attempts else None,
                    stamp if step_status == "passed" else None,
                ),
            )
            for number in range(1, attempts + 1):
                attempt_id += 1
                passed = step_status == "passed" and number == attempts
                yield (
                    "attempts",
                    (
                        attempt_id,
                        step_id,
                        number,
                        f"# {phase}\n\nattempt {number}.\n",
                        "[]",
                        "bench-1",
                        0,
                        stamp,
                    ),
                )
                objections = [] if passed else ["R1 is not traced to a test"]
                yield (
                    "verdicts",
                    (
                        attempt_id,
                        attempt_id,
                        int(passed),
                        "validator",
                        json.dumps(objections),
                        stamp,
                    ),
                )
                for role, (provider, model, tier, price) in zip(
                    ("producer", "validator"), MODELS, strict=True
                ):
                    call_id += 1
                    tokens_in, tokens_out = rng.randint(300, 3000), rng.randint(50, 800)
                    unknown = call_id % 50 == 0  # an in-house model without a price
                    yield (
                        "calls",
                        (
                            call_id,
                            ticket_id,
                            step_id,
                            phase,
                            role,
                            number,
                            provider,
                            model,
                            tier,
                            tokens_in,
                            tokens_out,
                            0,
                            rng.uniform(50, 900),
                            None if unknown else (tokens_in + tokens_out) * price,
                            0,
                            None,
                            stamp,
                        ),
                    )
            if attempts:
                event_id += 1
                yield "events", (event_id, ticket_id, step_status, f"{phase}: {step_status}", stamp)


INSERTS = {
    "tickets": "INSERT INTO tickets (id, kind, title, body, lane, sensitive, status, route,"
    " position, handoff_reason, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
    "steps": "INSERT INTO steps (id, ticket_id, position, phase, status, attempts_allowed,"
    " attempts_used, deliverable, claims, priority, started_at, finished_at)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
    "attempts": "INSERT INTO attempts (id, step_id, number, text, prompt, worker, truncated,"
    " created_at) VALUES (?,?,?,?,?,?,?,?)",
    "verdicts": "INSERT INTO verdicts (id, attempt_id, passed, source, objections, created_at)"
    " VALUES (?,?,?,?,?,?)",
    "calls": "INSERT INTO calls (id, ticket_id, step_id, phase, role, attempt, provider, model,"
    " tier, input_tokens, output_tokens, cached_tokens, latency_ms, cost, fallback, error,"
    " created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "events": "INSERT INTO events (id, ticket_id, kind, message, created_at) VALUES (?,?,?,?,?)",
}


def build_store(root: Path, tickets: int, env: dict[str, str]) -> dict[str, int]:
    """A project in `root` with a store of `tickets` tickets; returns the row counts."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    (root / "shipline.toml").write_text(TOML, encoding="utf-8")
    (root / "script.yaml").write_text("rules: []\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "shipline", "init"],
        cwd=root,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    db = root / ".shipline" / "shipline.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    batches: dict[str, list[tuple[Any, ...]]] = {table: [] for table in INSERTS}
    counts = dict.fromkeys(INSERTS, 0)
    for table, row in rows(tickets):
        batch = batches[table]
        batch.append(row)
        counts[table] += 1
        if len(batch) >= 20_000:
            conn.executemany(INSERTS[table], batch)
            batch.clear()
    for table, batch in batches.items():
        conn.executemany(INSERTS[table], batch)
    conn.execute("COMMIT")  # no ANALYZE: shipline never runs it, so neither does the bench
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    return counts


# --- the timing ----------------------------------------------------------------------------


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + sys) milliseconds of one run of `argv`, which must exit 0."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} in {cwd} exited {proc.returncode}: {stderr}")
    return wall * 1000, (usage.ru_utime + usage.ru_stime) * 1000


def child_env(src: Path, pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(src), PYTHONPYCACHEPREFIX=str(pycache), NO_COLOR="1", COLUMNS="200")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="tickets per store")
    parser.add_argument("--runs", type=int, default=5, help="interleaved rounds (>= 5)")
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a checkout to time (repeatable; default: this one)",
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    sizes = [int(s) for s in args.sizes.split(",")]
    checkouts = dict(c.split("=", 1) for c in args.checkout) or {"this": str(ROOT)}

    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        work = Path(tmp)
        plan: list[tuple[str, str, int | None, list[str], Path, dict[str, str]]] = []
        stores: dict[str, dict[str, Any]] = {}
        for name, path in checkouts.items():
            env = child_env(Path(path).resolve() / "src", work / f"pyc-{name}")
            for size in sizes:
                root = work / name / str(size)
                began = time.perf_counter()
                counts = build_store(root, size, env)
                seconds = time.perf_counter() - began
                db = root / ".shipline" / "shipline.db"
                stores[f"{name}/{size}"] = {
                    "rows": counts,
                    "mib": round(db.stat().st_size / 2**20, 1),
                    "build_s": round(seconds, 1),
                }
                print(f"{name}: {size} tickets, {stores[f'{name}/{size}']}", file=sys.stderr)
                for command, words in commands(max(1, size // 2)).items():
                    argv = [sys.executable, "-m", "shipline", *words]
                    plan.append((name, command, size, argv, root, env))
            for command, words in FLOORS.items():
                plan.append((name, command, None, [sys.executable, *words], work, env))
        for _name, _command, _size, run_argv, cwd, env in plan:  # warm the bytecode cache
            timed(run_argv, cwd, env)

        load_before = os.getloadavg()
        samples: dict[tuple[str, str, int | None], list[tuple[float, float]]] = {}
        for round_no in range(args.runs):
            print(f"round {round_no + 1}/{args.runs}…", file=sys.stderr, flush=True)
            order = plan if round_no % 2 == 0 else plan[::-1]
            for name, command, size, run_argv, cwd, env in order:
                samples.setdefault((name, command, size), []).append(timed(run_argv, cwd, env))
        load_after = os.getloadavg()

    results = [
        {
            "checkout": name,
            "command": command,
            "tickets": size,
            "wall_ms": [round(w, 1) for w, _ in runs],
            "cpu_ms": [round(c, 1) for _, c in runs],
            "median_wall_ms": round(statistics.median(w for w, _ in runs), 1),
            "median_cpu_ms": round(statistics.median(c for _, c in runs), 1),
        }
        for (name, command, size), runs in samples.items()
    ]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": load_after,
        "runs": args.runs,
        "sizes": sizes,
        "checkouts": checkouts,
        "stores": stores,
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))
    print(
        f"\nload average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"{os.cpu_count()} CPUs; JSON: {args.json}"
    )
    return 0


def table(report: dict[str, Any]) -> str:
    """Markdown: one row per checkout and command, median wall (CPU) ms per store size, and
    how the largest store compares with the smallest."""
    sizes = report["sizes"]
    by_key = {(r["checkout"], r["command"], r["tickets"]): r for r in report["results"]}
    head = ["checkout", "command", *(f"{s:,} tickets ms" for s in sizes), "largest / smallest"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(sizes) + 1)]
    seen: list[tuple[str, str]] = []
    for r in report["results"]:
        if (r["checkout"], r["command"]) not in seen:
            seen.append((r["checkout"], r["command"]))
    for checkout, command in seen:
        if (checkout, command, None) in by_key:
            r = by_key[(checkout, command, None)]
            cell = f"{r['median_wall_ms']:,.0f} ({r['median_cpu_ms']:,.0f})"
            lines.append(f"| {checkout} | {command} | {cell} |" + " |" * len(sizes))
            continue
        cells, walls = [], []
        for size in sizes:
            r = by_key[(checkout, command, size)]
            walls.append(r["median_wall_ms"])
            cells.append(f"{r['median_wall_ms']:,.0f} ({r['median_cpu_ms']:,.0f})")
        growth = f"{walls[-1] / walls[0]:.2f}x" if walls[0] else "-"
        lines.append(f"| {checkout} | {command} | " + " | ".join(cells) + f" | {growth} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
