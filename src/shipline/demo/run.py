"""`shipline demo`: a sample repo, one feature, one hotfix and one epic, run end to end.

On the embedded model (SmolLM2-135M) most tickets stop in needs-human: the deterministic
checks catch what a 135M model cannot do, which is the point of showing them. `--replay`
runs the same tickets on the scripted provider with recorded good answers and reaches done.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shipline.config import scripted_toml
from shipline.demo.sample import DEMO_TICKETS, write_sample_repo
from shipline.engine.project import open_project
from shipline.engine.tickets import NewTicket, create_ticket, list_tickets, ticket_detail
from shipline.engine.worker import Worker
from shipline.errors import ConfigError
from shipline.render import print_event, styled
from shipline.workspaces.git import Git, WorkspaceError

LOCAL_CONFIG = """\
# shipline demo on the embedded model (SmolLM2-135M through llama.cpp): no key, no network.
# To see real work, point the tiers at a stronger model, e.g. an OpenAI-compatible server.
[providers.local]
kind = "local"

[tiers]
top = ["local"]
mid = ["local"]
cheap = ["local"]
local = ["local"]

# Kept short so the demo finishes in about two minutes on two CPU cores: two attempts a phase,
# short answers. Raise these (or drop them) with a stronger model.
[validator]
max_output_tokens = 96
[phases.discovery]
max_attempts = 2
max_output_tokens = 320
[phases.techspec]
max_attempts = 2
max_output_tokens = 320
[phases.plan]
max_attempts = 2
max_output_tokens = 320
[phases.diagnose]
max_attempts = 2
max_output_tokens = 320
[phases.split]
max_attempts = 2
max_output_tokens = 256
[phases.tests]
max_attempts = 2
max_output_tokens = 320
[phases.implement]
max_attempts = 2
max_output_tokens = 320
[phases.review]
max_attempts = 2
max_output_tokens = 256
"""

REPLAY_CONFIG = (
    "# shipline demo, replayed: the scripted provider answers from replay.yaml (recorded "
    "answers).\n" + scripted_toml("replay", "replay.yaml")
)


def _git(repo: Path, *args: str) -> None:
    try:
        Git(repo, ("shipline demo", "demo@shipline.invalid")).run(*args)
    except WorkspaceError as exc:
        raise ConfigError(f"the demo cannot make its sample repository: {exc}") from None


def prepare(directory: Path | None, replay: bool) -> Path:
    """Create the sample repo with its shipline.toml (and replay script)."""
    if directory is None:
        root = Path(tempfile.mkdtemp(prefix="shipline-demo-"))
    else:
        root = directory.resolve()
        if root.exists() and any(root.iterdir()):
            raise ConfigError(f"--dir {root} is not empty: name a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
    write_sample_repo(root)
    (root / "shipline.toml").write_text(REPLAY_CONFIG if replay else LOCAL_CONFIG, encoding="utf-8")
    if replay:
        script = resources.files("shipline.demo").joinpath("replay.yaml")
        (root / "replay.yaml").write_text(script.read_text(encoding="utf-8"), encoding="utf-8")
    (root / ".gitignore").write_text(".shipline/\n__pycache__/\n", encoding="utf-8")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "sample project")
    return root


def summary(project: Any) -> list[dict[str, Any]]:
    rows = []
    for row in list_tickets(project.store):
        detail = ticket_detail(project.store, row["id"])
        reached = [p["phase"] for p in detail["phases"] if p["attempts"]]
        objections = sum(
            len(a["verdict"]["objections"])
            for p in detail["phases"]
            for a in p["attempts"]
            if a["verdict"]
        )
        seconds = sum(p["seconds"] or 0 for p in detail["phases"])
        rows.append({**row, "reached": reached, "objections": objections, "seconds": seconds})
    return rows


def summary_table(rows: list[dict[str, Any]], replay: bool) -> Table:
    label = "replay (scripted provider, recorded answers)" if replay else "embedded SmolLM2-135M"
    table = Table(title=f"shipline demo — {label}")
    for column in (
        "#",
        "kind",
        "ticket",
        "status",
        "phases reached",
        "attempts",
        "objections",
        "tokens",
        "seconds",
    ):
        table.add_column(column)
    for row in rows:
        title = row["title"] if row["parent_id"] is None else f"↳ {row['title']}"
        table.add_row(
            str(row["id"]),
            row["kind"],
            title,
            styled(row["status"]),
            f"{' → '.join(row['reached']) or '-'} ({row['phases_done']}/{row['phases_total']})",
            str(row["attempts"]),
            str(row["objections"]),
            str(row["tokens"]),
            f"{row['seconds']:.1f}",
        )
    return table


def run_demo(directory: Path | None, *, replay: bool, console: Console, as_json: bool) -> None:
    started = time.perf_counter()
    root = prepare(directory, replay)
    out = Console(stderr=True) if as_json else console
    out.print(f"sample repo: {root}")
    project = open_project(root)
    for ticket in DEMO_TICKETS:
        create_ticket(
            project.store,
            project.settings,
            NewTicket(kind=ticket["kind"], title=ticket["title"], body=ticket["body"]),
        )
    if not replay:
        out.print(
            "running on the embedded SmolLM2-135M (llama.cpp, CPU); this takes a couple of minutes…"
        )
    worker = Worker(project, on_event=lambda t, k, msg: print_event(out, t, k, msg))
    with out.status("working…", spinner="dots"):
        worker.run_until_idle()
    rows = summary(project)
    elapsed = time.perf_counter() - started
    if as_json:
        sys.stdout.write(
            json.dumps(
                {"dir": str(root), "replay": replay, "seconds": elapsed, "tickets": rows},
                indent=2,
                default=str,
            )
            + "\n"
        )
        return
    console.print(summary_table(rows, replay))
    console.print(
        f"finished in {elapsed:.1f}s. Inspect a ticket: cd {root} && shipline ticket show 1"
    )
    if not replay:
        waiting = sum(1 for r in rows if r["status"] == "needs-human")
        console.print(
            f"{waiting} of {len(rows)} tickets stopped in needs-human. That is expected: a 135M "
            "model rarely writes a spec that passes the deterministic checks, and shipline hands "
            "off instead of grinding on. Point \\[tiers] in shipline.toml at a stronger model "
            "(docs/config.md), or run `shipline demo --replay` to see the whole path."
        )
