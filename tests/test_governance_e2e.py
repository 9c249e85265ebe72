"""Budgets and lane policy, end to end through the CLI: a human gets the ticket, with why."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import demo_ticket, make_project

PRICED = """
[providers.script]
kind = "scripted"
script = "script.yaml"
price_input_per_mtok = 400.0
price_output_per_mtok = 400.0
"""


def test_ticket_budget_hands_off_before_the_next_call(tmp_path: Path) -> None:
    project = make_project(tmp_path / "repo", None)
    toml = (project.root / "shipline.toml").read_text()
    toml = toml.replace('[providers.script]\nkind = "scripted"\nscript = "script.yaml"\n', PRICED)
    (project.root / "shipline.toml").write_text(toml + "\n[budgets]\nper_ticket_usd = 1.0\n")
    feature = demo_ticket("feature")
    ticket_id = project.add("feature", feature["title"], feature["body"])
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    assert "budget reached: ticket #1 spent $" in detail["handoff_reason"]
    assert "of its $1.00 budget" in detail["handoff_reason"]
    spent = sum(c["cost"] for c in detail["calls"])
    assert spent >= 1.0
    last_call_cost = detail["calls"][-1]["cost"]
    assert spent - last_call_cost < 1.0, "a call was made after the budget was reached"
    assert detail["cost"] == pytest.approx(spent)


def test_lane_policy_keeps_a_lane_on_in_house_providers(tmp_path: Path) -> None:
    hosted = (
        '\n[providers.hosted]\nkind = "openai"\nmodel = "gpt-4o-mini"\n'
        'base_url = "http://127.0.0.1:9/v1"\n'
        "[lanes.3]\nin_house_only = true\n"
    )
    project = make_project(tmp_path / "repo", None, hosted)
    toml = (
        (project.root / "shipline.toml")
        .read_text()
        .replace('top = ["script"]\nmid = ["script"]', 'top = ["hosted"]\nmid = ["hosted"]')
    )
    (project.root / "shipline.toml").write_text(toml)
    feature = demo_ticket("feature")
    lane3 = project.add("feature", feature["title"], feature["body"], "--lane", "3")
    project.cli("run")
    detail = project.show(lane3)
    assert detail["status"] == "needs-human"
    assert "no provider with in_house = true" in detail["handoff_reason"]
    assert detail["calls"] == []
    explained = project.cli("route", "explain", str(lane3)).stdout
    assert "BLOCKED" in explained or "blocked" in explained
