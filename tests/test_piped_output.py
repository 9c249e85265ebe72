"""Piped output for scripts and grep: an error is one line, a table cell is never cut.

The real CLI runs in a subprocess on a narrow COLUMNS; piped, that width must not matter.
On a terminal (a pseudo-terminal here) the tables still fit the terminal's width.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from conftest import Project, make_project
from shipline.engine.project import open_project
from shipline.store import models as m

LONG_TITLE = "the importer crashes" + " on a very long and oddly nested vendor manifest" * 3
assert len(LONG_TITLE) > 150

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def piped(
    root: Path, *args: str, columns: int = 40, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout and stderr piped, on a narrow COLUMNS."""
    env = {**os.environ, "COLUMNS": str(columns), "NO_COLOR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "shipline", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.returncode == expect, result.stderr
    return result


def row_of(table: str, first_cell: str) -> str:
    """The one table row whose first cell is `first_cell`."""
    (line,) = [
        line
        for line in table.splitlines()
        if line.startswith("│") and line.split("│")[1].strip() == first_cell
    ]
    return line


def test_piped_ticket_list_keeps_every_cell_whole_on_a_narrow_terminal(
    sqlite_project: Project,
) -> None:
    ticket_id = sqlite_project.add("hotfix", LONG_TITLE)

    table = piped(sqlite_project.root, "ticket", "list").stdout

    assert "…" not in table
    row = row_of(table, str(ticket_id))
    assert " hotfix " in row and " queued " in row and LONG_TITLE in row


def test_piped_ticket_show_keeps_the_title_and_every_phase_row_whole(
    sqlite_project: Project,
) -> None:
    ticket_id = sqlite_project.add("hotfix", LONG_TITLE)
    phases = sqlite_project.show(ticket_id)["phases"]

    shown = piped(sqlite_project.root, "ticket", "show", str(ticket_id)).stdout

    assert "…" not in shown
    assert f"#{ticket_id} {LONG_TITLE}" in shown
    for phase in phases:
        row = row_of(shown, phase["phase"])
        assert phase["deliverable"] in row and f"0/{phase['attempts_allowed']}" in row


def test_piped_route_explain_keeps_every_reason_whole(sqlite_project: Project) -> None:
    ticket_id = sqlite_project.add("hotfix", LONG_TITLE)
    explained = json.loads(sqlite_project.cli("route", "explain", str(ticket_id), "--json").stdout)

    text = piped(sqlite_project.root, "route", "explain", str(ticket_id)).stdout

    assert "…" not in text
    assert f"route of ticket #{ticket_id}: hotfix / lane 2 / queued" in text
    for phase in explained["phases"]:
        assert phase["producer"]["reason"] in row_of(text, phase["phase"])


def test_piped_cost_keeps_a_long_provider_name_and_its_cost_on_one_row(
    sqlite_project: Project,
) -> None:
    ticket_id = sqlite_project.add("hotfix", "price me")
    provider = "inhouse-gpu-cluster-eu-west-with-a-long-name"
    opened = open_project(sqlite_project.root)
    with opened.store.session() as session:
        step = session.scalars(select(m.Step).where(m.Step.ticket_id == ticket_id)).first()
        assert step is not None
        session.add(
            m.Call(
                ticket_id=ticket_id,
                step_id=step.id,
                phase=step.phase,
                role="producer",
                attempt=1,
                provider=provider,
                model="qwen-7b",
                tier="mid",
                input_tokens=1234,
                output_tokens=56,
                cost=0.0123,
            )
        )
    opened.close()

    table = piped(sqlite_project.root, "cost", "--by", "provider").stdout

    assert "…" not in table
    assert "$0.0123" in row_of(table, provider) and "1234" in row_of(table, provider)


def test_a_long_multi_line_error_is_one_line_on_a_pipe(tmp_path: Path) -> None:
    make_project(tmp_path / "repo", None)
    url = "postgresql://nobody_with_a_rather_long_user_name@127.0.0.1:1/some_database_name"

    out = piped(tmp_path / "repo", "--db", url, "ticket", "list", expect=2)

    # psycopg's own message has a line break ("Connection refused\n\tIs the server …").
    (line,) = out.stderr.splitlines()
    assert line.startswith("error: StoreError: cannot open the store at postgresql+psycopg://")
    assert "some_database_name" in line and "Is the server running" in line
    assert out.stdout == ""


def test_json_output_is_the_same_whatever_the_width(sqlite_project: Project) -> None:
    sqlite_project.add("hotfix", LONG_TITLE)

    narrow = piped(sqlite_project.root, "ticket", "list", "--json").stdout
    wide = piped(sqlite_project.root, "ticket", "list", "--json", columns=200).stdout

    assert narrow == wide and json.loads(narrow)[0]["title"] == LONG_TITLE


def test_on_a_terminal_the_table_still_fits_its_width(sqlite_project: Project) -> None:
    sqlite_project.add("hotfix", LONG_TITLE)
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "60", "NO_COLOR": "1", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shipline", "ticket", "list"],
        cwd=sqlite_project.root,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command is done
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    screen = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))

    lines = [line for line in screen.splitlines() if line.strip()]
    assert lines and max(len(line) for line in lines) <= 60
    assert LONG_TITLE not in screen  # wrapped to the terminal, as before
