"""Benchmark: ticket workspaces (`git worktree add` or `git clone`), and where a ticket's time goes.

Two halves, both run by default (`--only worktree` or `--only tickets` runs one).

worktree: builds a large repository locally (default: 20,000 files, 300 commits, packed, with
`git fast-import`), then measures, each `--repeat` times (median reported):

- shipline's `ensure_worktree` (lock, prune, `git worktree add -b`, checkout),
- a bare `git worktree add -b`,
- `git clone --no-local` (objects copied through the pack protocol: what a clone of a
  remote costs at best, without the network),
- a plain local `git clone` (objects hard-linked: cheap on disk, same file system only).

Disk: `du`-style bytes allocated by the new workspace, and the new bytes it really adds
(files hard-linked with the source repository are not counted again).

tickets: the scripted end-to-end run of tests/test_workspaces_e2e.py, standalone. The demo's
sample package (`greet`, with a pytest suite) under git, every tier on the scripted provider
replaying the demo's recorded answers, pytest as `[judge] command`. N tickets (alternately
the demo's feature and hotfix; a fresh sample project per pair, since two shout features
would conflict) each run alone with `Worker.run_until_idle()` in this process, through
tests, implement, review and the merge queue. Per ticket, of its wall time:

- judge: `judge_runs.duration_s` (tests, judge and merge runs), from the store,
- model: `calls.latency_ms` (the scripted provider: ~0 unless `--model-delay-s`),
- git: every `git` subprocess the engine starts (timed by wrapping the git layer's process
  call, `shipline.workspaces.git.run_argv`); of
  which worktree: the time in `ensure_worktree` (each code attempt calls it; the first creates
  the worktree, the others check and reuse it),
- engine: the rest (store transactions, prompts, checks, file blocks, logs, Python).

Prints tables of times and shares of wall; writes JSON to bench/results/workspaces.json.

    python bench/workspaces.py [--only worktree|tickets] [--files 20000] [--commits 300]
                               [--repeat 3] [--tickets 4] [--model-delay-s 0]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import yaml
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shipline.config import scripted_toml
from shipline.demo.sample import DEMO_TICKETS, REPLAY_SCRIPT, write_sample_repo
from shipline.engine import code
from shipline.engine.project import open_project
from shipline.engine.setup import init_project
from shipline.engine.tickets import NewTicket, create_ticket
from shipline.engine.worker import Worker
from shipline.workspaces import ensure_worktree, remove_worktree
from shipline.workspaces import git as git_layer

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def git(cwd: Path, *args: str, stdin: bytes | None = None) -> None:
    subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True, env=GIT_ENV
    )


def _blob(i: int, rev: int) -> bytes:
    """Source-like text, ~1.5 KiB, different for each file and revision."""
    lines = [f"# module {i} revision {rev}", f"def function_{i}(x):"]
    lines += [f"    value_{k} = x * {k + i} + {rev}  # step {k} of module {i}" for k in range(28)]
    lines.append("    return x")
    return ("\n".join(lines) + "\n").encode()


def build_repo(path: Path, files: int, commits: int) -> None:
    """A packed repository of `files` files over `commits` commits, through fast-import."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    stream = bytearray()
    per_commit = max(files // 4 // max(commits - 1, 1), 1)
    when = 1_700_000_000
    for c in range(commits):
        stream += b"commit refs/heads/main\n"
        stream += b"committer bench <bench@localhost> %d +0000\n" % (when + c * 60)
        message = f"commit {c}".encode()
        stream += b"data %d\n%s\n" % (len(message), message)
        if c == 0:
            changed = range(files)
        else:
            start = (c * per_commit * 7) % files
            changed = range(start, min(start + per_commit, files))
        for i in changed:
            data = _blob(i, c)
            name = f"pkg{i % 50:02d}/sub{i % 7}/module_{i:05d}.py".encode()
            stream += b"M 100644 inline %s\ndata %d\n%s\n" % (name, len(data), data)
    git(path, "fast-import", "--quiet", stdin=bytes(stream))
    git(path, "checkout", "-q", "-f", "main")
    git(path, "gc", "-q", "--aggressive" if files < 2000 else "--quiet")


def disk(path: Path, source: Path | None = None) -> tuple[int, int]:
    """(allocated bytes, new bytes): new bytes leave out files hard-linked to `source`."""
    total = new = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size = st.st_blocks * 512
            total += size
            shared = (
                source is not None
                and st.st_nlink > 1
                and not os.path.isdir(os.path.join(dirpath, name))
            )
            if not shared:
                new += size
    return total, new


Method = tuple[str, Callable[[int], Path], Callable[[Path], int], Callable[[Path], None]]


@dataclass
class Row:
    method: str
    seconds_all: list[float]
    disk_bytes: int
    new_disk_bytes: int

    @property
    def seconds(self) -> float:
        return statistics.median(self.seconds_all)


def measure(methods: list[Method], repeat: int, source: Path) -> list[Row]:
    """Run the methods round-robin (so machine load drifts alike for all), `repeat` times."""
    times: dict[str, list[float]] = {m[0]: [] for m in methods}
    sizes: dict[str, list[int]] = {m[0]: [] for m in methods}
    news: dict[str, list[int]] = {m[0]: [] for m in methods}
    for i in range(repeat):
        for name, run, extra, reset in methods:
            started = time.perf_counter()
            dest = run(i)
            times[name].append(round(time.perf_counter() - started, 4))
            total, new = disk(dest, source)
            sizes[name].append(total + extra(dest))
            news[name].append(new + extra(dest))
            reset(dest)
    return [
        Row(
            name,
            times[name],
            int(statistics.median(sizes[name])),
            int(statistics.median(news[name])),
        )
        for name, *_ in methods
    ]


def worktree_half(args: argparse.Namespace) -> dict[str, Any]:
    """`ensure_worktree`, `git worktree add` and two kinds of clone on a large repository."""
    with tempfile.TemporaryDirectory(prefix="shipline-bench-") as tmp:
        base = Path(tmp)
        repo = base / "repo"
        started = time.perf_counter()
        build_repo(repo, args.files, args.commits)
        build_s = time.perf_counter() - started
        repo_git_bytes, _ = disk(repo / ".git")
        checkout_bytes = disk(repo)[0] - repo_git_bytes
        root = base / "worktrees"

        def worktree_git_dir(dest: Path) -> int:
            gitdir = repo / ".git" / "worktrees" / dest.name
            return disk(gitdir)[0] if gitdir.exists() else 0

        def ensure(i: int) -> Path:
            return ensure_worktree(repo, root, f"t{i}", "bench ticket").path

        def ensure_reset(dest: Path) -> None:
            remove_worktree(repo, root, dest.name, delete_branch=True)

        def raw_add(i: int) -> Path:
            dest = base / f"raw{i}"
            git(repo, "worktree", "add", "-q", "-b", f"raw{i}", str(dest), "main")
            return dest

        def raw_reset(dest: Path) -> None:
            git(repo, "worktree", "remove", "--force", str(dest))
            git(repo, "branch", "-D", dest.name)

        def clone(flag: list[str]) -> Callable[[int], Path]:
            def run(i: int) -> Path:
                dest = base / f"clone{'-'.join(flag)}{i}"
                git(base, "clone", "-q", *flag, str(repo), str(dest))
                git(dest, "checkout", "-q", "-b", f"ticket{i}")
                return dest

            return run

        def rm(dest: Path) -> None:
            shutil.rmtree(dest)

        methods: list[Method] = [
            ("shipline ensure_worktree", ensure, worktree_git_dir, ensure_reset),
            ("git worktree add", raw_add, worktree_git_dir, raw_reset),
            ("git clone --no-local", clone(["--no-local"]), lambda _: 0, rm),
            ("git clone (local, hard links)", clone([]), lambda _: 0, rm),
        ]
        results = measure(methods, args.repeat, repo)

    ref = results[0]
    print(
        f"repository: {args.files} files, {args.commits} commits, "
        f".git {repo_git_bytes / 2**20:.1f} MiB, checkout {checkout_bytes / 2**20:.1f} MiB "
        f"(built in {build_s:.1f} s); median of {args.repeat}"
    )
    header = (
        f"{'method':32} {'median s':>9} {'x time':>7} {'disk MiB':>9} {'new MiB':>8} {'x new':>6}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for row in results:
        time_ratio = row.seconds / ref.seconds
        disk_ratio = row.new_disk_bytes / ref.new_disk_bytes
        print(
            f"{row.method:32} {row.seconds:9.3f} {time_ratio:7.2f} "
            f"{row.disk_bytes / 2**20:9.1f} {row.new_disk_bytes / 2**20:8.1f} {disk_ratio:6.2f}"
        )
        rows.append(
            {
                **asdict(row),
                "seconds_median": row.seconds,
                "time_ratio_vs_ensure_worktree": round(time_ratio, 2),
                "new_disk_ratio_vs_ensure_worktree": round(disk_ratio, 2),
            }
        )
    return {
        "repository": {
            "files": args.files,
            "commits": args.commits,
            "git_dir_bytes": repo_git_bytes,
            "checkout_bytes": checkout_bytes,
            "build_seconds": round(build_s, 2),
        },
        "repeat": args.repeat,
        "results": rows,
    }


# --- tickets: the engine's own time against the judge's, the model's and git's ------------------

# The e2e test's configuration: every tier on the scripted provider, pytest as the judge. The
# sample package needs no pytest plugin; not loading those installed here (langsmith…) keeps
# each judge run well under a second.
PYTEST = (
    f"PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {shlex.quote(sys.executable)} -m pytest -q "
    "-p no:cacheprovider"
)
TICKETS_TOML = (
    scripted_toml("script", "script.yaml")
    + f"""
[judge]
command = "{PYTEST}"
timeout_s = 60
"""
)
KINDS = ("feature", "hotfix")  # the two demo tickets that touch different code: they both merge


@dataclass
class Stopwatch:
    """Calls of, and seconds in, what it wraps, by the name `key` gives each call."""

    by_name: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return int(sum(entry["calls"] for entry in self.by_name.values()))

    @property
    def seconds(self) -> float:
        return sum(entry["seconds"] for entry in self.by_name.values())

    def wrap(self, fn: Callable[..., Any], key: Callable[..., str | None]) -> Callable[..., Any]:
        """`fn`, timed; a call whose key is None is not."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = key(*args, **kwargs)
            if name is None:
                return fn(*args, **kwargs)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                entry = self.by_name.setdefault(name, {"calls": 0, "seconds": 0.0})
                entry["calls"] += 1
                entry["seconds"] += time.perf_counter() - started

        return timed


def _git_subcommand(args: Any = None, *_: Any, **__: Any) -> str | None:
    """A `git` subprocess's subcommand; None for any other command."""
    if isinstance(args, list | tuple) and len(args) > 1 and args[0] == "git":
        return str(args[1])
    return None


@contextmanager
def timed_git() -> Iterator[tuple[Stopwatch, Stopwatch]]:
    """Time every git subprocess (shipline starts them all through `Git.run`, which calls
    `run_argv`) and `ensure_worktree` as the code path calls it."""
    git_clock, worktree_clock = Stopwatch(), Stopwatch()
    with (
        mock.patch.object(
            git_layer, "run_argv", git_clock.wrap(git_layer.run_argv, _git_subcommand)
        ),
        mock.patch.object(
            code,
            "ensure_worktree",
            worktree_clock.wrap(code.ensure_worktree, lambda *_, **__: "ensure_worktree"),
        ),
    ):
        yield git_clock, worktree_clock


def sample_project(root: Path, rules: list[dict[str, Any]]) -> Path:
    """The demo's sample repo under git, on the scripted provider, with pytest as the judge."""
    write_sample_repo(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    (root / "shipline.toml").write_text(TICKETS_TOML, encoding="utf-8")
    (root / "script.yaml").write_text(yaml.safe_dump({"rules": rules}), encoding="utf-8")
    init_project(root)
    return root


@dataclass
class TicketTime:
    """One ticket run alone, start to merge: its wall time and what it was spent on."""

    ticket: str
    kind: str
    status: str
    merged: int
    attempts: int
    calls: int
    judge_runs: int
    git_calls: int
    wall_s: float
    judge_s: float  # judge_runs.duration_s: tests, judge and merge runs
    model_s: float  # calls.latency_ms
    git_s: float  # every git subprocess, ensure_worktree's included
    worktree_s: float  # ensure_worktree (create or reuse), a part of git_s
    judge_by_purpose: dict[str, float] = field(default_factory=dict)
    git_by_subcommand: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def engine_s(self) -> float:
        return self.wall_s - self.judge_s - self.model_s - self.git_s


def store_figures(db: Path, ticket_id: int) -> dict[str, Any]:
    """What the store recorded for one ticket: status, attempts, judge runs and model calls."""
    conn = sqlite3.connect(db)
    try:
        (status,) = conn.execute("SELECT status FROM tickets WHERE id = ?", (ticket_id,)).fetchone()
        by_purpose = dict(
            conn.execute(
                "SELECT purpose, SUM(duration_s) FROM judge_runs WHERE ticket_id = ? "
                "GROUP BY purpose",
                (ticket_id,),
            ).fetchall()
        )
        (judge_runs,) = conn.execute(
            "SELECT COUNT(*) FROM judge_runs WHERE ticket_id = ?", (ticket_id,)
        ).fetchone()
        model_ms, calls = conn.execute(
            "SELECT COALESCE(SUM(latency_ms), 0), COUNT(*) FROM calls WHERE ticket_id = ?",
            (ticket_id,),
        ).fetchone()
        (attempts,) = conn.execute(
            "SELECT COUNT(*) FROM attempts a JOIN steps s ON a.step_id = s.id "
            "WHERE s.ticket_id = ?",
            (ticket_id,),
        ).fetchone()
        (merged,) = conn.execute(
            "SELECT COUNT(*) FROM merges WHERE ticket_id = ?", (ticket_id,)
        ).fetchone()
    finally:
        conn.close()
    return {
        "status": status,
        "merged": merged,
        "attempts": attempts,
        "calls": calls,
        "judge_runs": judge_runs,
        "judge_s": sum(by_purpose.values()),
        "judge_by_purpose": {k: round(v, 3) for k, v in sorted(by_purpose.items())},
        "model_s": model_ms / 1000,
    }


def run_tickets(base: Path, count: int, model_delay_s: float) -> tuple[list[TicketTime], float]:
    """Run `count` tickets one at a time, a fresh sample project per feature + hotfix pair.

    Returns the tickets' figures and the seconds spent making projects (not in any ticket).
    """
    rules = yaml.safe_load(REPLAY_SCRIPT.read_text(encoding="utf-8"))["rules"]
    if model_delay_s:
        rules = [{**rule, "delay_s": model_delay_s} for rule in rules]
    demo = {t["kind"]: t for t in DEMO_TICKETS}
    times: list[TicketTime] = []
    setup_s = 0.0
    project = None
    try:
        for n in range(count):
            kind = KINDS[n % len(KINDS)]
            if n % len(KINDS) == 0:
                if project is not None:
                    project.close()
                started = time.perf_counter()
                root = sample_project(base / f"project-{n // len(KINDS) + 1}", rules)
                project = open_project(root, create=True)  # a new sample project
                setup_s += time.perf_counter() - started
            assert project is not None
            ticket = NewTicket(kind=kind, title=demo[kind]["title"], body=demo[kind]["body"])
            ticket_id = create_ticket(project.store, project.settings, ticket)
            worker = Worker(project)
            with timed_git() as (git_clock, worktree_clock):
                started = time.perf_counter()
                worker.run_until_idle()
                wall_s = time.perf_counter() - started
            figures = store_figures(project.root / ".shipline" / "shipline.db", ticket_id)
            if figures["judge_runs"] and not worktree_clock.calls:
                print(
                    "warning: the judge ran but not through shipline.engine.code.ensure_worktree:"
                    " the worktree column misses it",
                    file=sys.stderr,
                )
            times.append(
                TicketTime(
                    ticket=f"{n // len(KINDS) + 1}/#{ticket_id}",
                    kind=kind,
                    wall_s=wall_s,
                    git_s=git_clock.seconds,
                    git_calls=git_clock.calls,
                    git_by_subcommand=git_clock.by_name,
                    worktree_s=worktree_clock.seconds,
                    **figures,
                )
            )
    finally:
        if project is not None:
            project.close()
    return times, setup_s


def total(times: list[TicketTime]) -> TicketTime:
    purposes: dict[str, float] = {}
    subcommands: dict[str, dict[str, float]] = {}
    for t in times:
        for purpose, seconds in t.judge_by_purpose.items():
            purposes[purpose] = round(purposes.get(purpose, 0.0) + seconds, 3)
        for name, entry in t.git_by_subcommand.items():
            summed_entry = subcommands.setdefault(name, {"calls": 0, "seconds": 0.0})
            summed_entry["calls"] += entry["calls"]
            summed_entry["seconds"] += entry["seconds"]
    statuses = sorted({t.status for t in times})
    summed = {
        name: sum(getattr(t, name) for t in times)
        for name in (
            "merged",
            "attempts",
            "calls",
            "judge_runs",
            "git_calls",
            "wall_s",
            "judge_s",
            "model_s",
            "git_s",
            "worktree_s",
        )
    }
    return TicketTime(
        ticket="all",
        kind="",
        status=",".join(statuses),
        judge_by_purpose=purposes,
        git_by_subcommand=subcommands,
        **summed,
    )


def _row_json(t: TicketTime) -> dict[str, Any]:
    shares = {
        f"{part}_share": round(getattr(t, f"{part}_s") / t.wall_s, 4) if t.wall_s else None
        for part in ("judge", "model", "git", "worktree", "engine")
    }
    seconds = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(t).items()}
    seconds["git_by_subcommand"] = {
        name: {"calls": int(entry["calls"]), "seconds": round(entry["seconds"], 4)}
        for name, entry in sorted(t.git_by_subcommand.items(), key=lambda kv: -kv[1]["seconds"])
    }
    return {
        **seconds,
        "engine_s": round(t.engine_s, 4),
        **shares,
        "engine_ms_per_attempt": round(t.engine_s / t.attempts * 1000, 1) if t.attempts else None,
    }


def render_tickets(times: list[TicketTime], all_: TicketTime, model_delay_s: float) -> None:
    def part(seconds: float, wall: float) -> str:
        return f"{seconds:.2f} {seconds / wall:4.0%}" if wall else f"{seconds:.2f}"

    delay = f", model delay {model_delay_s:g} s/call" if model_delay_s else ""
    table = Table(
        title=f"where a ticket's time goes: {len(times)} scripted tickets, pytest judge{delay}"
    )
    headers = [
        "project/#",
        "kind",
        "status",
        "attempts",
        "judge runs",
        "git calls",
        "wall s",
        "judge s",
        "model s",
        "git s",
        "↳ worktree s",
        "engine s",
        "engine ms/attempt",
    ]
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i < 3 else "right", no_wrap=True)
    for t in [*times, all_]:
        table.add_row(
            t.ticket,
            t.kind,
            t.status,
            str(t.attempts),
            str(t.judge_runs),
            str(t.git_calls),
            f"{t.wall_s:.2f}",
            part(t.judge_s, t.wall_s),
            part(t.model_s, t.wall_s),
            part(t.git_s, t.wall_s),
            part(t.worktree_s, t.wall_s),
            part(t.engine_s, t.wall_s),
            f"{t.engine_s / t.attempts * 1000:.0f}" if t.attempts else "-",
            end_section=t is times[-1],
        )
    table.caption = "seconds, then the share of the ticket's wall time"
    console = Console()
    console.width = max(console.width, 170)
    console.print(table)
    judged = ", ".join(f"{p} {s:.2f} s" for p, s in all_.judge_by_purpose.items())
    console.print(f"judge runs by purpose: {judged}")
    by_time = sorted(all_.git_by_subcommand.items(), key=lambda kv: -kv[1]["seconds"])
    gits = ", ".join(f"{name} {e['calls']:.0f}× {e['seconds']:.2f} s" for name, e in by_time)
    console.print(f"git by subcommand: {gits}")


def tickets_half(args: argparse.Namespace) -> dict[str, Any]:
    """The scripted e2e run: wall time per ticket split into judge, model, git and engine."""
    with tempfile.TemporaryDirectory(prefix="shipline-bench-tickets-") as tmp:
        times, setup_s = run_tickets(Path(tmp), args.tickets, args.model_delay_s)
    all_ = total(times)
    render_tickets(times, all_, args.model_delay_s)
    return {
        "count": args.tickets,
        "kinds": [t.kind for t in times],
        "model_delay_s": args.model_delay_s,
        "judge_command": PYTEST,
        "project_setup_seconds": round(setup_s, 3),
        "per_ticket": [_row_json(t) for t in times],
        "total": _row_json(all_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only", choices=["worktree", "tickets"], help="run one half (default: both)"
    )
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--commits", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--tickets", type=int, default=4, help="scripted tickets, alternately feature and hotfix"
    )
    parser.add_argument(
        "--model-delay-s", type=float, default=0.0, help="simulated latency of each model call"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "workspaces.json"
    )
    args = parser.parse_args()
    if args.tickets < 1:
        parser.error("--tickets must be >= 1")
    if args.model_delay_s < 0:
        parser.error("--model-delay-s must be >= 0")

    report: dict[str, Any] = {
        "benchmark": "workspaces",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    if args.only != "tickets":
        report.update(worktree_half(args))
    if args.only != "worktree":
        if args.only is None:
            print()
        report["tickets"] = tickets_half(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
