"""The CLI starts light: `--help` loads neither the store nor the API, a read command loads
the store and its views but not the engine's loop, the providers, Jinja or Alembic; `ticket
list` shows a page (the newest 50) with a footer; `shipline doctor` reports what it finds."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

import shipline.api
from conftest import Project, make_project, run_cli
from shipline.engine.doctor import judge_program
from shipline.engine.project import open_project
from shipline.engine.tickets import NewTicket, create_ticket
from shipline.store.migrate import SCHEMA_HEAD

# The real CLI in a real process, which lists the modules it loaded as it exits.
LISTING = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print('MODULES', json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
    "sys.argv = ['shipline', *sys.argv[1:]]\n"
    "from shipline.cli import main\n"
    "main()\n"
)


def imported(cwd: Path, *args: str) -> set[str]:
    """The modules `shipline ARGS` has loaded by the time it exits."""
    done = subprocess.run(
        [sys.executable, "-c", LISTING, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    return set(json.loads(line.removeprefix("MODULES ")))


def test_help_loads_neither_the_store_nor_the_api(tmp_path: Path) -> None:
    modules = imported(tmp_path, "--help")
    assert "shipline.cli.app" in modules  # the measurement sees the CLI itself
    assert not {"sqlalchemy", "pydantic", "shipline.api", "shipline.store"} & modules


def test_a_read_command_loads_no_engine_loop_providers_templates_or_migrations(
    sqlite_project: Project,
) -> None:
    modules = imported(sqlite_project.root, "ticket", "list")
    assert {"sqlalchemy", "shipline.store.db", "shipline.api.tickets"} <= modules
    heavy = {
        "alembic",  # the store is at the current schema: one SELECT, no migration work
        "jinja2",
        "yaml",
        "shipline.engine.loop",
        "shipline.engine.worker",
        "shipline.providers.registry",
    }
    assert not heavy & modules


def test_the_api_names_are_listed_once_and_each_resolves() -> None:
    source = Path(shipline.api.__file__).read_text(encoding="utf-8")
    checked: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                checked |= {alias.name for alias in statement.names}
    homes = shipline.api._HOME
    assert set(shipline.api.__all__) == set(homes) == checked
    for name in shipline.api.__all__:
        assert getattr(shipline.api, name) is not None
    with pytest.raises(AttributeError):
        _ = shipline.api.no_such_name


# --- pagination ------------------------------------------------------------------------------


def add_tickets(project: Project, count: int) -> None:
    opened = open_project(project.root)
    try:
        for n in range(count):
            new = NewTicket(kind="hotfix", title=f"ticket {n + 1}")
            create_ticket(opened.store, opened.settings, new)
    finally:
        opened.close()


def test_ticket_list_shows_the_newest_page_and_says_how_many_more(
    sqlite_project: Project,
) -> None:
    add_tickets(sqlite_project, 53)

    table = sqlite_project.cli("ticket", "list").stdout
    assert "… and 3 older ticket(s) not shown: --limit N, or --all" in table
    assert "ticket 53" in table and "ticket 4" in table and "ticket 3 " not in table

    page = sqlite_project.cli("ticket", "list", "--json", "--limit", "2")
    assert [t["id"] for t in json.loads(page.stdout)] == [52, 53]  # oldest first
    assert "51 older ticket(s) not shown" in page.stderr  # stdout stays one JSON document

    every = sqlite_project.cli("ticket", "list", "--json", "--all")
    assert [t["id"] for t in json.loads(every.stdout)] == list(range(1, 54))
    assert every.stderr == ""

    exact = sqlite_project.cli("ticket", "list", "--limit", "53")
    assert "not shown" not in exact.stdout


def test_a_status_filter_pages_and_counts_within_that_status(sqlite_project: Project) -> None:
    add_tickets(sqlite_project, 4)
    sqlite_project.cli("cancel", "2")
    sqlite_project.cli("cancel", "4")

    out = sqlite_project.cli("ticket", "list", "--status", "cancelled", "--limit", "1", "--json")

    assert [t["id"] for t in json.loads(out.stdout)] == [4]
    assert "1 older ticket(s) not shown" in out.stderr


# --- doctor ----------------------------------------------------------------------------------


def findings(out: str) -> dict[str, dict[str, object]]:
    return {f["check"]: f for f in json.loads(out)["findings"]}


def test_doctor_finds_a_healthy_project_healthy(sqlite_project: Project) -> None:
    out = sqlite_project.cli("doctor", "--json")
    found = findings(out.stdout)
    assert list(found) == ["config", "store", "integrity", "disk", "git", "judge"]
    assert all(f["ok"] for f in found.values()), found
    assert f"schema {SCHEMA_HEAD} (current)" in str(found["store"]["detail"])
    table = sqlite_project.cli("doctor").stdout
    assert "PRAGMA quick_check: ok" in table and "problem" not in table


def test_doctor_names_a_missing_judge_program_and_exits_1(tmp_path: Path) -> None:
    project = make_project(
        tmp_path / "repo", None, '\n[judge]\ncommand = "CI=1 no-such-judge-xyz --fast"\n'
    )
    out = project.cli("doctor", "--json", expect=1)
    judge = findings(out.stdout)["judge"]
    assert judge["ok"] is False and "'no-such-judge-xyz'" in str(judge["detail"])
    assert "not installed" in str(judge["detail"])


def test_doctor_reports_an_older_store_without_migrating_it(sqlite_project: Project) -> None:
    opened = open_project(sqlite_project.root)
    with opened.store.transaction() as conn:  # as if an older shipline had written it
        conn.execute(text("UPDATE alembic_version SET version_num = '0005'"))
    opened.close()

    out = sqlite_project.cli("doctor", "--json")

    store = findings(out.stdout)["store"]
    assert store["ok"] is True and "the next command migrates it" in str(store["detail"])
    db = sqlite_project.root / ".shipline" / "shipline.db"

    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0005",)


def test_doctor_without_a_config_says_so_and_checks_what_it_can(tmp_path: Path) -> None:
    out = run_cli(tmp_path, "doctor", "--json", expect=1)
    found = findings(out.stdout)
    assert found["config"]["ok"] is False and "run `shipline init`" in str(found["config"]["fix"])
    assert found["git"]["ok"] is False  # tmp_path is no git work tree


@pytest.mark.parametrize(
    ("command", "program"),
    [
        ("pytest -q", "pytest"),
        ("PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 python -m pytest -q", "python"),
        ("env CI=1 make test", "make"),
        ("./ci.sh --all", "./ci.sh"),
        ("cd app && npm test", None),
        ("'unbalanced", None),
        ("", None),
    ],
)
def test_the_judge_program_is_the_first_word_a_shell_would_run(
    command: str, program: str | None
) -> None:
    assert judge_program(command) == program
