"""The store's schema: migrations match the models, and an older store upgrades in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.exc import IntegrityError

from conftest import SCRIPTED_TOML, git, replay_rules, run_cli
from shipline.costs import cost_report
from shipline.engine.worker import claim_next
from shipline.store import models as m
from shipline.store.db import Store, open_store
from shipline.store.migrate import SCHEMA_HEAD, alembic_config, current_revision
from shipline.store.models import Base
from shipline.store.work import claim_next as claim_work
from shipline.store.work import enqueue


def test_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    store = open_store("sqlite:///s.db", tmp_path, create=True)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    store.close()
    assert diff == []


def test_an_older_store_is_upgraded_in_place_keeping_its_tickets(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tickets (kind, title, body, lane, sensitive, status, route, position,"
                " created_at, updated_at) VALUES ('hotfix', 'kept', '', 2, 0, 'queued', '[]', 0,"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    store = open_store("sqlite:///old.db", tmp_path)
    assert current_revision(store.engine) == SCHEMA_HEAD
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT title FROM tickets")).scalars().all() == ["kept"]
    store.close()


def build_at(url: str, revision: str) -> Engine:
    """A store at an older schema `revision`, built by the migrations themselves."""
    engine = create_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return engine


# Rows as shipline 0004 wrote them: a ticket mid-route, its steps, an attempt with its
# verdict, the calls that made them and its history.
ROWS_0004 = [
    "INSERT INTO tickets (id, kind, title, body, lane, sensitive, status, route, position,"
    " created_at, updated_at) VALUES (1, 'hotfix', 'greet crashes on an empty name', 'b', 2,"
    ' false, \'queued\', \'["diagnose", "tests", "implement", "review"]\', 1,'
    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO steps (id, ticket_id, position, phase, status, attempts_allowed, attempts_used,"
    " deliverable, claims, started_at, finished_at) VALUES"
    " (1, 1, 0, 'diagnose', 'passed', 3, 1, 'accepted text', 1, '2026-01-01 00:00:01',"
    " '2026-01-01 00:00:02'),"
    " (2, 1, 1, 'tests', 'pending', 3, 0, NULL, 0, NULL, NULL),"
    " (3, 1, 2, 'implement', 'pending', 3, 0, NULL, 0, NULL, NULL),"
    " (4, 1, 3, 'review', 'pending', 3, 0, NULL, 0, NULL, NULL)",
    "INSERT INTO attempts (id, step_id, number, text, prompt, worker, truncated, created_at)"
    " VALUES (1, 1, 1, 'accepted text', '[]', 'w#1', false, '2026-01-01 00:00:01')",
    "INSERT INTO verdicts (id, attempt_id, passed, source, objections, created_at)"
    " VALUES (1, 1, true, 'validator', '[]', '2026-01-01 00:00:02')",
    "INSERT INTO calls (id, ticket_id, step_id, phase, role, attempt, provider, model, tier,"
    " input_tokens, output_tokens, cached_tokens, latency_ms, cost, fallback, error, created_at)"
    " VALUES (1, 1, 1, 'diagnose', 'producer', 1, 'groq', 'llama', 'mid', 400, 50, 0, 12.5,"
    " 0.25, false, NULL, '2026-01-01 00:00:01'),"
    " (2, 1, 1, 'diagnose', 'validator', 1, 'groq', 'llama', 'cheap', 300, 20, 0, 8.0,"
    " NULL, false, NULL, '2026-01-01 00:00:02')",
    "INSERT INTO events (id, ticket_id, kind, message, created_at) VALUES"
    " (1, 1, 'created', 'hotfix route', '2026-01-01 00:00:00'),"
    " (2, 1, 'passed', 'diagnose attempt 1: passed (validator)', '2026-01-01 00:00:02')",
]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_0004_store_with_data_upgrades_in_place(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else "sqlite:///s.db"
    store = Store(url, tmp_path)
    engine = build_at(store.url, "0004")
    with engine.begin() as conn:
        for statement in ROWS_0004:
            conn.execute(text(statement))
        if backend == "postgresql":  # explicit ids: move the sequences past them
            for table in ("tickets", "steps", "attempts", "verdicts", "calls", "events"):
                conn.execute(
                    text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
                )
    engine.dispose()

    store = open_store(url, tmp_path)
    assert current_revision(store.engine) == SCHEMA_HEAD
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    with store.session() as session:
        ticket = session.get(m.Ticket, 1)
        assert ticket is not None and ticket.title == "greet crashes on an empty name"
        assert [(s.phase, s.status, s.priority, s.due_at) for s in ticket.steps] == [
            ("diagnose", "passed", 0, None),
            ("tests", "pending", 0, None),
            ("implement", "pending", 0, None),
            ("review", "pending", 0, None),
        ]
        assert ticket.steps[0].attempts[0].verdict is not None
        calls = session.scalars(select(m.Call).order_by(m.Call.id)).all()
        assert [(c.ticket_id, c.step_id, c.owner_kind, c.cost) for c in calls] == [
            (1, 1, None, 0.25),
            (1, 1, None, None),
        ]
        events = session.scalars(select(m.Event).order_by(m.Event.id)).all()
        assert [(e.ticket_id, e.owner_kind, e.kind) for e in events] == [
            (1, None, "created"),
            (1, None, "passed"),
        ]
    # The new columns and tables work on the upgraded store.
    claimed = claim_next(store, "w", lease_s=60)
    assert claimed is not None and claimed[0].phase == "tests"
    with store.transaction() as conn:
        item_id = enqueue(conn, "deploy", {"env": "staging"}, owner=(m.OwnerKind.TICKET, 1))
        item = claim_work(conn, "w", 60)
        assert item is not None and item.id == item_id
    with store.session() as session:
        call = m.Call(
            owner_kind=m.OwnerKind.WORK,
            owner_id=item_id,
            phase="deploy",
            role="producer",
            attempt=1,
            provider="p",
            model="m",
            tier="cheap",
        )
        session.add(call)
        session.flush()
        session.add(m.CallPayload(call_id=call.id, messages=[], response="ok"))
    with store.session() as session:
        assert cost_report(store).total.calls == 3
        assert session.scalar(select(m.CallPayload.response)) == "ok"
    store.close()


def test_a_0004_store_upgraded_in_place_runs_its_ticket_to_done(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "shipline.toml").write_text(SCRIPTED_TOML, encoding="utf-8")
    (root / "script.yaml").write_text(yaml.safe_dump({"rules": replay_rules()}))
    db = root / ".shipline" / "shipline.db"
    db.parent.mkdir()
    engine = build_at(f"sqlite:///{db}", "0004")
    with engine.begin() as conn:
        for statement in ROWS_0004:
            conn.execute(text(statement))
    engine.dispose()

    run_cli(root, "run")
    shown = json.loads(run_cli(root, "ticket", "show", "1", "--json").stdout)
    assert shown["status"] == "done"
    assert [p["status"] for p in shown["phases"]] == ["passed"] * 4
    assert [e["kind"] for e in shown["events"][:2]] == ["created", "passed"]
    assert len(shown["calls"]) > 2 and shown["calls"][0]["provider"] == "groq"


def test_foreign_keys_are_enforced_again_after_an_upgrade(tmp_path: Path) -> None:
    build_at(f"sqlite:///{tmp_path / 'old.db'}", "0004").dispose()
    store = open_store("sqlite:///old.db", tmp_path)  # the upgrade turns them off meanwhile
    with pytest.raises(IntegrityError), store.transaction() as conn:
        conn.execute(
            text(
                "INSERT INTO attempts (step_id, number, text, prompt, worker, truncated,"
                " created_at) VALUES (99, 1, 't', '[]', 'w', 0, '2026-01-01 00:00:00')"
            )
        )
    store.close()


@pytest.mark.postgres
def test_racing_first_starts_on_postgresql_all_succeed(tmp_path: Path, pg_url: str) -> None:
    """Six `shipline init`s build one empty PostgreSQL store at the same moment (only init
    creates a store): one migrates under an advisory lock, the others wait and find it at
    head. None dies on duplicate-key DDL."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "shipline.toml").write_text(SCRIPTED_TOML, encoding="utf-8")
    (root / "script.yaml").write_text(yaml.safe_dump({"rules": replay_rules()}), encoding="utf-8")
    env = {**os.environ, "NO_COLOR": "1"}
    command = [sys.executable, "-m", "shipline", "--db", pg_url, "init"]
    procs = [
        subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    results = [(p.wait(timeout=120), p.stdout, p.stderr) for p in procs]
    for code, out, err in results:
        assert out is not None and err is not None
        stderr = err.read().decode()
        assert code == 0, stderr
        assert "store ready" in out.read().decode()
    assert json.loads(run_cli(root, "ticket", "list", "--json", db=pg_url).stdout) == []
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert current_revision(engine) == SCHEMA_HEAD
    finally:
        engine.dispose()
