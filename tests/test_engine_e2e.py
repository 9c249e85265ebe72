"""The ticket engine end to end: the real CLI on a real git repo, SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Project, demo_ticket, make_project, replay_rules

GOOD_SPEC = """## Summary
Shout.

## Requirements
- **R1**: shout.
  - Acceptance: prints upper case.
"""


def phases(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["phase"]: p for p in detail["phases"]}


def test_feature_ticket_runs_every_phase_to_done(project: Project) -> None:
    feature = demo_ticket("feature")
    ticket_id = project.add("feature", feature["title"], feature["body"])
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "done"
    assert detail["route"] == ["discovery", "techspec", "plan", "tests", "implement", "review"]
    assert all(p["status"] == "passed" for p in detail["phases"])
    # the scripted techspec attempt 1 misses R3: the deterministic check objects, attempt 2 passes
    techspec = phases(detail)["techspec"]
    assert [a["verdict"]["passed"] for a in techspec["attempts"]] == [False, True]
    assert techspec["attempts"][0]["verdict"]["source"] == "checks"
    assert any("R3" in o for o in techspec["attempts"][0]["verdict"]["objections"])
    # every call is recorded with phase, role, attempt, provider, model, tokens and latency
    producer_calls = [c for c in detail["calls"] if c["role"] == "producer"]
    assert len(producer_calls) == 7
    assert all(c["provider"] == "script" and c["model"] == "scripted" for c in detail["calls"])
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in detail["calls"])
    assert all(c["latency_ms"] >= 0 and c["cost"] == 0 for c in detail["calls"])
    validator_calls = [c for c in detail["calls"] if c["role"] == "validator"]
    assert len(validator_calls) == 6  # the validator is asked only after the checks pass
    spec = project.cli("ticket", "show", str(ticket_id), "--deliverable", "spec.md").stdout
    assert "## Requirements" in spec and "R1" in spec


def test_hotfix_skips_techspec_and_plan(project: Project) -> None:
    hotfix = demo_ticket("hotfix")
    ticket_id = project.add("hotfix", hotfix["title"], hotfix["body"])
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "done"
    assert detail["route"] == ["diagnose", "tests", "implement", "review"]
    called = {c["phase"] for c in detail["calls"]}
    assert called == {"diagnose", "tests", "implement", "review"}
    # the diagnosis is the input of the tests phase: it is in that phase's prompt
    attempt_prompt = project_prompt(project, ticket_id, "tests")
    assert "## Root cause" in attempt_prompt
    assert "## Requirements" not in attempt_prompt


def project_prompt(project: Project, ticket_id: int, phase: str, attempt: int = 1) -> str:
    from sqlalchemy import select

    from shipline.engine.project import open_project
    from shipline.store import models as m

    opened = open_project(project.root, db=project.db_url)
    with opened.store.session() as session:
        row = session.execute(
            select(m.Attempt)
            .join(m.Step)
            .where(
                m.Step.ticket_id == ticket_id, m.Step.phase == phase, m.Attempt.number == attempt
            )
        ).scalar_one()
        text = "\n".join(msg["content"] for msg in row.prompt)
    opened.close()
    return text


def test_epic_splits_into_children_that_wait_for_their_dependencies(project: Project) -> None:
    epic = demo_ticket("epic")
    epic_id = project.add("epic", epic["title"], epic["body"])
    project.cli("run", "--workers", "2")
    detail = project.show(epic_id)
    assert detail["route"] == ["discovery", "techspec", "split"]
    assert detail["status"] == "done"
    children = detail["children"]
    assert [c["status"] for c in children] == ["done", "done"]
    first, second = (project.show(c["id"]) for c in children)
    assert first["parent_id"] == epic_id and second["parent_id"] == epic_id
    assert second["depends_on"] == [first["id"]]
    first_done = max(p["finished_at"] for p in first["phases"])
    second_started = min(p["started_at"] for p in second["phases"])
    assert second_started > first_done, "a child started before the child it depends on was done"
    assert len(project.tickets()) == 3


def test_rejected_attempt_is_resumed_with_every_earlier_objection(sqlite_project: Project) -> None:
    rules = [
        {
            "phase": "discovery",
            "role": "producer",
            "attempt": 1,
            "reply": "## Summary\nx\n",
        },  # no Requirements section
        {
            "phase": "discovery",
            "role": "producer",
            "attempt": 2,
            "reply": "## Summary\nx\n\n## Requirements\n- **R1**: shout.\n",
        },  # no acceptance
        {"phase": "discovery", "role": "producer", "reply": GOOD_SPEC},
        *replay_rules(),
    ]
    sqlite_project.write_script(rules)
    ticket_id = sqlite_project.add("feature", "Add a --shout flag", "shout")
    sqlite_project.cli("run")
    detail = sqlite_project.show(ticket_id)
    attempts = phases(detail)["discovery"]["attempts"]
    assert [a["verdict"]["passed"] for a in attempts] == [False, False, True]
    first = attempts[0]["verdict"]["objections"]
    second = attempts[1]["verdict"]["objections"]
    assert first != second
    third_prompt = project_prompt(sqlite_project, ticket_id, "discovery", attempt=3)
    for objection in first + second:
        assert objection in third_prompt


def test_phase_hands_off_after_its_attempts_then_approve_continues(sqlite_project: Project) -> None:
    sqlite_project.write_script(
        [
            {"phase": "discovery", "role": "producer", "reply": "## Summary\nonly this\n"},
            *replay_rules(),
        ]
    )
    with (sqlite_project.root / "shipline.toml").open("a") as toml:
        toml.write("\n[phases.discovery]\nmax_attempts = 2\n")
    ticket_id = sqlite_project.add("feature", "Add a --shout flag", "shout")
    sqlite_project.cli("run")
    detail = sqlite_project.show(ticket_id)
    assert detail["status"] == "needs-human"
    assert phases(detail)["discovery"]["attempts_used"] == 2
    assert "discovery used 2/2 attempts" in detail["handoff_reason"]
    assert "## Requirements" in detail["handoff_reason"]
    # the human edits the deliverable and approves it: the ticket continues from techspec
    (sqlite_project.root / "spec.md").write_text(GOOD_SPEC.replace("shout.", "shout (edited)."))
    sqlite_project.cli("approve", str(ticket_id), "--file", "spec.md")
    detail = sqlite_project.show(ticket_id)
    assert detail["status"] == "queued" and detail["phase"] == "techspec"
    discovery = phases(detail)["discovery"]
    assert discovery["status"] == "approved"
    assert discovery["attempts"][-1]["verdict"]["source"] == "human"
    spec = sqlite_project.cli("ticket", "show", str(ticket_id), "--deliverable", "discovery")
    assert "(edited)" in spec.stdout


def test_retry_gives_more_attempts_and_puts_the_note_in_context(sqlite_project: Project) -> None:
    sqlite_project.write_script(
        [
            {"phase": "discovery", "role": "producer", "attempt": 1, "reply": "nothing\n"},
            {"phase": "discovery", "role": "producer", "reply": GOOD_SPEC},
            *replay_rules(),
        ]
    )
    with (sqlite_project.root / "shipline.toml").open("a") as toml:
        toml.write("\n[phases.discovery]\nmax_attempts = 1\n")
    ticket_id = sqlite_project.add("feature", "Add a --shout flag", "shout")
    sqlite_project.cli("run")
    assert sqlite_project.show(ticket_id)["status"] == "needs-human"
    sqlite_project.cli("approve", "999", expect=2)
    sqlite_project.cli(
        "retry", str(ticket_id), "--note", "Number requirements R1..Rn", "--attempts", "2"
    )
    sqlite_project.cli("run")
    detail = sqlite_project.show(ticket_id)
    discovery = phases(detail)["discovery"]
    assert discovery["status"] == "passed"
    assert discovery["attempts_allowed"] == 3
    assert "Number requirements R1..Rn" in project_prompt(
        sqlite_project, ticket_id, "discovery", attempt=2
    )


def split_epic_with_stuck_children(project: Project) -> int:
    """The demo epic splits into two children, whose provider then fails (they hand off)."""
    epic = demo_ticket("epic")
    project.write_script(
        [r for r in replay_rules() if "French" not in str(r.get("title"))]
        + [{"phase": "*", "role": "producer", "error": "no answer for children"}]
    )
    epic_id = project.add("epic", epic["title"], epic["body"])
    project.cli("run")
    return epic_id


def test_cancel_ends_an_epic_and_its_children(sqlite_project: Project) -> None:
    epic_id = split_epic_with_stuck_children(sqlite_project)
    detail = sqlite_project.show(epic_id)
    assert detail["status"] == "waiting-children"
    out = sqlite_project.cli("cancel", str(epic_id)).stdout
    assert f"#{epic_id}" in out
    statuses = {t["id"]: t["status"] for t in sqlite_project.tickets()}
    assert set(statuses.values()) == {"cancelled"}
    sqlite_project.cli("cancel", str(epic_id), expect=2)


def test_validator_objection_fails_the_attempt(sqlite_project: Project) -> None:
    sqlite_project.write_script(
        [
            {
                "phase": "discovery",
                "role": "validator",
                "attempt": 1,
                "reply": '{"pass": false, "objections": ["R1 does not match the ticket"]}',
            },
            *replay_rules(),
        ]
    )
    feature = demo_ticket("feature")
    ticket_id = sqlite_project.add("feature", feature["title"], feature["body"])
    sqlite_project.cli("run")
    attempts = phases(sqlite_project.show(ticket_id))["discovery"]["attempts"]
    assert attempts[0]["verdict"] == {
        "passed": False,
        "source": "validator",
        "objections": ["R1 does not match the ticket"],
    }
    assert attempts[1]["verdict"]["passed"] is True
    assert "R1 does not match the ticket" in project_prompt(
        sqlite_project, ticket_id, "discovery", attempt=2
    )


def test_unparsable_validator_output_is_retried_then_objects(sqlite_project: Project) -> None:
    sqlite_project.write_script(
        [
            {"phase": "discovery", "role": "validator", "reply": "Sure! Looks great to me."},
            *replay_rules(),
        ]
    )
    with (sqlite_project.root / "shipline.toml").open("a") as toml:
        toml.write("\n[phases.discovery]\nmax_attempts = 2\n[validator]\nparse_retries = 1\n")
    feature = demo_ticket("feature")
    ticket_id = sqlite_project.add("feature", feature["title"], feature["body"])
    sqlite_project.cli("run")
    detail = sqlite_project.show(ticket_id)
    assert detail["status"] == "needs-human"
    discovery = phases(detail)["discovery"]
    for attempt in discovery["attempts"]:
        assert attempt["verdict"]["source"] == "error"
        assert "not a valid JSON verdict after 2 tries" in attempt["verdict"]["objections"][0]
    validator_calls = [c for c in detail["calls"] if c["role"] == "validator"]
    assert len(validator_calls) == 4  # 2 attempts x (1 try + 1 retry)


def test_scripted_call_without_a_rule_hands_off_naming_the_request(sqlite_project: Project) -> None:
    sqlite_project.write_script([{"phase": "techspec", "reply": "x"}])
    ticket_id = sqlite_project.add("feature", "Add a --shout flag", "shout")
    sqlite_project.cli("run")
    detail = sqlite_project.show(ticket_id)
    assert detail["status"] == "needs-human"
    reason = detail["handoff_reason"]
    assert "no rule for phase=discovery role=producer attempt=1 kind=feature" in reason
    assert phases(detail)["discovery"]["attempts_used"] == 0  # a dead provider is no attempt


def test_budget_truncates_inputs_to_their_outline(sqlite_project: Project) -> None:
    feature = demo_ticket("feature")
    with (sqlite_project.root / "shipline.toml").open("a") as toml:
        toml.write("\n[phases.plan]\ninput_token_budget = 460\n")
    ticket_id = sqlite_project.add("feature", feature["title"], feature["body"])
    sqlite_project.cli("run")
    plan = phases(sqlite_project.show(ticket_id))["plan"]
    assert plan["attempts"][0]["truncated"] is True
    prompt = project_prompt(sqlite_project, ticket_id, "plan")
    assert "cut to its outline" in prompt
    assert "**R1**" in prompt and "**D1**" in prompt  # the IDs survive truncation


def test_prompt_over_budget_after_truncation_hands_off_with_figures(
    sqlite_project: Project,
) -> None:
    with (sqlite_project.root / "shipline.toml").open("a") as toml:
        toml.write("\n[phases.discovery]\ninput_token_budget = 200\n")
    ticket_id = sqlite_project.add("feature", "Add a --shout flag", "x " * 2000)
    sqlite_project.cli("run")
    detail = sqlite_project.show(ticket_id)
    assert detail["status"] == "needs-human"
    assert "input_token_budget is 200" in detail["handoff_reason"]
    assert detail["calls"] == []


def test_demo_replay_reaches_done_for_every_ticket(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from conftest import git, run_cli
    from shipline.api import DemoReport
    from shipline.cli.app import _print_demo_outcome
    from shipline.process import run_command
    from test_workspaces_e2e import PYTEST

    demo = tmp_path / "demo"
    out = run_cli(tmp_path, "demo", "--replay", "--dir", str(demo), "--json")
    summary = json.loads(out.stdout)
    assert summary["replay"] is True
    assert [t["status"] for t in summary["tickets"]] == ["done"] * 5
    assert [t["kind"] for t in summary["tickets"]] == [
        "feature",
        "hotfix",
        "epic",
        "feature",
        "feature",
    ]
    human = run_cli(demo, "ticket", "list").stdout
    assert "done" in human

    # with the judge init would write (the sample's pytest), every code ticket is merged:
    # one squashed commit each on main, in merge order, and main's tests pass
    assert summary["judge"].endswith("-m pytest -q")
    assert summary["target"] == "main"
    code = [t for t in summary["tickets"] if t["kind"] != "epic"]
    commits = [(c["ticket"], c["subject"]) for c in summary["commits"]]
    assert commits == [(t["id"], f"shipline #{t['id']}: {t['title']}") for t in code]
    log = git(demo, "log", "--format=%H %s", "main").splitlines()
    newest_first = [f"{c['sha']} {c['subject']}" for c in reversed(summary["commits"])]
    assert log[:-1] == newest_first
    assert log[-1].endswith(" sample project")
    assert summary["target_green"] is True
    tests = run_command(PYTEST, demo, 60)  # the main checkout holds main's merged code
    assert tests.ok, tests.log
    assert "failed" not in tests.log and " passed" in tests.log
    assert git(demo, "status", "--porcelain") == ""
    # each ticket's deliverables stay on its own branch, not on main ([merge]
    # include_deliverables is false by default)
    assert ".shipline/" not in git(demo, "ls-tree", "-r", "--name-only", "main")
    for ticket in code:
        branch = git(
            demo, "for-each-ref", "--format=%(refname)", f"refs/heads/shipline/{ticket['id']}-*"
        )
        files = git(demo, "ls-tree", "-r", "--name-only", branch.strip())
        assert f".shipline/{ticket['id']}/implementation.md" in files.splitlines()

    # what a newcomer reads under the table: the commits, the tests, where the repo is
    _print_demo_outcome(DemoReport.model_validate(summary))
    shown = capsys.readouterr().out
    for commit in summary["commits"]:
        assert f"  {commit['sha'][:10]} {commit['subject']}" in shown
    assert "the sample's tests on main: pass" in shown
    assert f"cd {demo} && git log --oneline main" in shown


def test_routes_are_data_a_team_can_change(tmp_path: Any) -> None:
    project = make_project(
        tmp_path / "repo",
        None,
        extra_toml='\n[routes]\nfeature = ["discovery", "techspec", "plan", "tests", '
        '"implement", "review"]\nhotfix = ["diagnose", "tests", "implement", "review"]\n'
        'epic = ["discovery", "techspec", "split"]\n"feature.lane1" = ["plan"]\n',
    )
    lane1 = project.add("feature", "Tidy the docs", "", "--lane", "1")
    lane2 = project.add("feature", "Tidy the code", "")
    assert project.show(lane1)["route"] == ["plan"]
    assert len(project.show(lane2)["route"]) == 6


def test_an_epic_whose_children_are_all_cancelled_goes_to_a_human(
    sqlite_project: Project,
) -> None:
    epic_id = split_epic_with_stuck_children(sqlite_project)
    children = sqlite_project.show(epic_id)["children"]
    for child in children:
        sqlite_project.cli("cancel", str(child["id"]))
    detail = sqlite_project.show(epic_id)
    assert detail["status"] == "needs-human"
    assert detail["handoff_reason"] == (
        f"children #{children[0]['id']}, #{children[1]['id']} were cancelled"
    )


def test_cancelling_a_child_hands_its_dependents_to_a_human(sqlite_project: Project) -> None:
    epic_id = split_epic_with_stuck_children(sqlite_project)
    first, second = sqlite_project.show(epic_id)["children"]
    assert second["status"] == "queued"  # waiting for the first child
    sqlite_project.cli("cancel", str(first["id"]))
    detail = sqlite_project.show(second["id"])
    assert detail["status"] == "needs-human"
    assert detail["handoff_reason"] == f"depends on #{first['id']}, cancelled"


def test_a_malformed_children_json_cannot_be_approved(sqlite_project: Project) -> None:
    epic = demo_ticket("epic")
    sqlite_project.write_script(
        [
            {"phase": "split", "role": "producer", "reply": "Here are the children: none"},
            *replay_rules(),
        ]
    )
    with (sqlite_project.root / "shipline.toml").open("a") as toml:
        toml.write("\n[phases.split]\nmax_attempts = 1\n")
    epic_id = sqlite_project.add("epic", epic["title"], epic["body"])
    sqlite_project.cli("run")
    assert sqlite_project.show(epic_id)["status"] == "needs-human"
    out = sqlite_project.cli("approve", str(epic_id), expect=2)
    assert "children.json cannot be approved as it is" in out.stderr
    (sqlite_project.root / "children.json").write_text(
        '{"children": [{"key": "fr", "kind": "feature", "title": "French", "body": "b", '
        '"depends_on": []}]}'
    )
    sqlite_project.cli("approve", str(epic_id), "--file", "children.json")
    detail = sqlite_project.show(epic_id)
    assert detail["status"] == "waiting-children"
    assert [c["title"] for c in detail["children"]] == ["French"]
