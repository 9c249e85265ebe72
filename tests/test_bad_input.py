"""Bad input gets a clear one-line error and exit code 2: never a traceback, never lost data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import Project, make_project, run_cli


def test_unknown_kind_is_refused(sqlite_project: Project) -> None:
    out = sqlite_project.cli("ticket", "add", "--kind", "chore", "--title", "x", expect=2)
    assert "unknown ticket kind 'chore' (known: epic, feature, hotfix)" in out.stderr
    assert sqlite_project.tickets() == []


def test_missing_body_file_is_refused(sqlite_project: Project) -> None:
    out = sqlite_project.cli(
        "ticket", "add", "--kind", "feature", "--title", "x", "--body-file", "nope.md", expect=2
    )
    assert "body file nope.md does not exist" in out.stderr


@pytest.mark.parametrize(
    ("title", "lane", "message"),
    [("  ", "2", "non-empty title"), ("x", "7", "lane must be 1, 2 or 3 (got 7)")],
)
def test_malformed_ticket_is_refused(
    sqlite_project: Project, title: str, lane: str, message: str
) -> None:
    out = sqlite_project.cli(
        "ticket", "add", "--kind", "feature", "--title", title, "--lane", lane, expect=2
    )
    assert message in out.stderr


def test_unknown_ticket_id_is_a_clear_error(sqlite_project: Project) -> None:
    assert "no ticket #42" in sqlite_project.cli("ticket", "show", "42", expect=2).stderr


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[store\nurl = 1", "is not valid TOML"),
        (
            '[routes]\nfeature = ["discovery", "desing"]\nhotfix = ["diagnose"]\n'
            'epic = ["split"]\n',
            "names unknown phase 'desing'",
        ),
        (
            '[routes]\nfeature = ["discovery", "plan", "discovery"]\nhotfix = ["diagnose"]\n'
            'epic = ["split"]\n',
            "has a cycle: 'discovery' appears twice",
        ),
        ("[phases.plan]\nmax_attempts = 0\n", "[phases.plan.max_attempts]"),
        (
            '[tiers]\ntop = ["nowhere"]\n',
            "names provider 'nowhere', which has no [providers.nowhere]",
        ),
        ("[wat]\nx = 1\n", "[wat] Extra inputs are not permitted"),
        ("[phases.desgin]\nmax_attempts = 2\n", "[phases.desgin] is not a phase"),
        ('[tiers]\nfast = ["local"]\n', "[phases.diagnose] tier is 'mid', which is not a tier"),
        (
            '[routes]\nfeature = ["plan"]\nhotfix = ["diagnose"]\nepic = ["split"]\n'
            '"chore.lane1" = ["plan"]\n',
            "has no route for kind 'chore'",
        ),
        (
            '[routes]\nfeature = ["implement", "fix-ci"]\nhotfix = ["diagnose"]\n'
            'epic = ["split"]\n',
            "lists 'fix-ci': it is not routed",
        ),
        (
            '[judge]\ncommand = "true"\n[phases.review]\nsession = "builtin"\n',
            "session = 'builtin': only the code phases",
        ),
        (
            '[judge]\ncommand = "true"\n[phases.implement]\nsession = "codx"\n',
            "session = 'codx' is neither 'builtin' nor an [agents.codx] entry",
        ),
        ('[agents.cx]\nkind = "cursor"\n', "[agents.cx.kind]"),
        ('[merge]\nmode = "squash"\n', "[merge.mode]"),
    ],
)
def test_broken_config_is_a_clear_error(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "shipline.toml").write_text(toml)
    out = run_cli(tmp_path, "ticket", "list", expect=2)
    assert message in out.stderr
    assert "shipline.toml" in out.stderr


def test_commands_outside_a_project_say_to_run_init(tmp_path: Path) -> None:
    assert "run `shipline init` first" in run_cli(tmp_path, "ticket", "list", expect=2).stderr


def test_malformed_scripted_script_is_a_clear_error(sqlite_project: Project) -> None:
    (sqlite_project.root / "script.yaml").write_text("rules:\n  - phase: discovery\n")
    sqlite_project.add("feature", "x")
    out = sqlite_project.cli("run", expect=2)
    assert "needs exactly one of reply, reply_file or error" in out.stderr
    assert sqlite_project.tickets()[0]["status"] == "queued"  # nothing lost or half-done


def test_database_from_a_newer_shipline_is_refused(sqlite_project: Project) -> None:
    sqlite_project.add("feature", "keep me")
    db = sqlite_project.root / ".shipline" / "shipline.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    out = sqlite_project.cli("ticket", "list", expect=2)
    assert "written by a newer shipline (schema revision 9999" in out.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT title FROM tickets").fetchall() == [("keep me",)]


def test_unreachable_postgres_is_a_clear_error(tmp_path: Path) -> None:
    make_project(tmp_path / "repo", None)
    out = run_cli(
        tmp_path / "repo", "--db", "postgresql://nobody@127.0.0.1:1/x", "ticket", "list", expect=2
    )
    assert "cannot open the store at postgresql+psycopg://nobody@127.0.0.1:1/x" in out.stderr


def test_schema_head_matches_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    from shipline.store.migrate import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_HEAD


def test_init_is_idempotent_and_keeps_the_store_out_of_git(tmp_path: Path) -> None:
    from conftest import git

    git(tmp_path, "init", "-q")
    run_cli(tmp_path, "init")
    run_cli(tmp_path, "ticket", "add", "--kind", "hotfix", "--title", "crash on start")
    out = run_cli(tmp_path, "init")
    assert "kept the existing" in out.stdout
    assert ".shipline/" in (tmp_path / ".gitignore").read_text()
    assert len(run_cli(tmp_path, "ticket", "list", "--json").stdout.split('"id"')) == 2


def test_a_file_that_is_not_a_database_is_a_clear_error(sqlite_project: Project) -> None:
    db = sqlite_project.root / ".shipline" / "shipline.db"
    db.write_bytes(b"not a database, just bytes" * 100)
    out = sqlite_project.cli("ticket", "list", expect=2)
    assert "cannot open the store at sqlite:///" in out.stderr
    assert "file is not a database" in out.stderr
