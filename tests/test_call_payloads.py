"""Call payloads for distillation: every call's prompt and answer, redacted, behind
`[calls] keep_payloads`, pruned after `payload_retention_days`. Real runs of the scripted
provider through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update

from conftest import Project, demo_ticket, make_project
from shipline.engine import sql
from shipline.engine.project import open_project
from shipline.providers.base import Message
from shipline.store import models as m

KEEP = "\n[calls]\nkeep_payloads = true\npayload_retention_days = 30\n"
SECRET = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2"
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def add_hotfix_with_a_secret(project: Project) -> int:
    hotfix = demo_ticket("hotfix")
    body = (
        hotfix["body"] + f"\n\nThe CI log shows OPENAI_API_KEY={SECRET} and a push with "
        f"https://bot:{GITHUB_TOKEN}@github.com/acme/greet.git failing too."
    )
    return project.add("hotfix", hotfix["title"], body)


def payload_rows(project: Project) -> tuple[list[m.Call], list[m.CallPayload]]:
    opened = open_project(project.root, db=project.db_url)
    with opened.store.session() as session:
        calls = list(session.scalars(select(m.Call).order_by(m.Call.id)))
        payloads = list(session.scalars(select(m.CallPayload).order_by(m.CallPayload.call_id)))
    opened.close()
    return calls, payloads


def test_every_call_keeps_its_prompt_and_answer_redacted(tmp_path: Path, store_url: Any) -> None:
    project = make_project(tmp_path / "repo", store_url, KEEP)
    ticket_id = add_hotfix_with_a_secret(project)
    project.cli("run")
    assert project.show(ticket_id)["status"] == "done"

    calls, payloads = payload_rows(project)
    assert calls and [p.call_id for p in payloads] == [c.id for c in calls]
    stored = json.dumps([[p.messages, p.response] for p in payloads])
    assert SECRET not in stored and GITHUB_TOKEN not in stored
    assert "OPENAI_API_KEY=***" in stored and "https://bot:***@github.com" in stored
    diagnose = payloads[0]
    assert [turn["role"] for turn in diagnose.messages] == ["system", "user"]
    assert "greet crashes on an empty name" in diagnose.messages[1]["content"]
    assert diagnose.response and diagnose.response.startswith("## ")
    assert all(p.response for p in payloads)  # every scripted call answered
    # The bill itself is unchanged: calls keep no text.
    assert {c.phase for c in calls} == {"diagnose", "tests", "implement", "review"}


def test_no_payload_is_written_when_payloads_are_off(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo", None)
    add_hotfix_with_a_secret(project)
    project.cli("run")
    calls, payloads = payload_rows(project)
    assert calls and payloads == []


def test_payloads_past_retention_are_pruned(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo", None, KEEP)
    add_hotfix_with_a_secret(project)
    project.cli("run")
    opened = open_project(project.root)
    store = opened.store
    with store.session() as session:
        total = session.scalar(select(func.count()).select_from(m.CallPayload))
        old_ids = list(session.scalars(select(m.CallPayload.call_id).limit(3)))
        session.execute(
            update(m.CallPayload)
            .where(m.CallPayload.call_id.in_(old_ids))
            .values(created_at=m.utcnow() - timedelta(days=31))
        )
    assert total and total > 3
    assert store.prune_payloads(30) == 3
    assert store.prune_payloads(30) == 0
    with store.session() as session:
        kept = set(session.scalars(select(m.CallPayload.call_id)))
        calls = session.scalar(select(func.count()).select_from(m.Call))
    assert len(kept) == total - 3 and not kept & set(old_ids)
    assert calls == total  # the bill is kept: only the payloads go

    # A worker prunes when it goes idle: everything aged past retention goes on the next run.
    with store.session() as session:
        session.execute(update(m.CallPayload).values(created_at=m.utcnow() - timedelta(days=40)))
    opened.close()
    project.cli("run")
    assert payload_rows(project)[1] == []


def test_calls_with_and_without_a_payload_are_written_together(tmp_path: Path) -> None:
    """A coding session's calls mix router calls (with a payload) and an external agent's
    (none): one flush writes both, each payload under its own call."""
    project = make_project(tmp_path / "repo", None)
    ticket_id = project.add("hotfix", "greet crashes on an empty name")
    opened = open_project(project.root)
    with opened.store.session() as session:
        step_id = session.scalars(select(m.Step.id).where(m.Step.ticket_id == ticket_id)).first()

    def call(model: str, payload: dict[str, Any] | None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "ticket_id": ticket_id,
            "step_id": step_id,
            "phase": "implement",
            "role": "producer",
            "attempt": 1,
            "provider": "p",
            "model": model,
            "tier": "mid",
            "input_tokens": 1,
            "output_tokens": 1,
            "cached_tokens": 0,
            "latency_ms": 1.0,
            "cost": 0.0,
            "fallback": False,
            "error": None,
            "created_at": m.utcnow(),
        }
        if payload is not None:
            row[sql.PAYLOAD] = payload
        return row

    first = sql.call_payload([Message("user", "token=abc123secret please")], "one")
    calls = [call("a", first), call("agent", None), call("c", sql.call_payload([], None))]
    with opened.store.transaction() as conn:
        sql.insert_calls(conn, calls)
    with opened.store.session() as session:
        rows = session.scalars(select(m.Call).where(m.Call.phase == "implement"))
        by_model = {c.model: c.id for c in rows}
        payloads = {p.call_id: p for p in session.scalars(select(m.CallPayload))}
    opened.close()
    assert set(payloads) == {by_model["a"], by_model["c"]}
    assert payloads[by_model["a"]].messages == [{"role": "user", "content": "token=*** please"}]
    assert payloads[by_model["a"]].response == "one"
    assert payloads[by_model["c"]].response is None
