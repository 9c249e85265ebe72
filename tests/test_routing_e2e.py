"""Routing end to end: the real CLI, a real llm-katan that fails every call, the scripted backup.

The project's `flaky` provider is an OpenAI-compatible llm-katan on loopback with
`--error-rate 1.0`, first in every tier; `script` (the scripted provider, in-house) is
second. Tickets must still finish, the calls table must show every failed try and every
fallback, `shipline cost` must add them up, and a sensitive ticket must never reach the
hosted server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, demo_ticket, make_project
from loopback import Katan, start_katan

FLAKY = """\
[providers.flaky]
kind = "openai"
model = "gpt-4o-mini"
base_url = "{url}"
max_retries = 0
failure_threshold = {threshold}
cooldown_s = 600

[providers.script]
kind = "scripted"
script = "script.yaml"
"""


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Katan]:
    server = start_katan(tmp_path_factory.mktemp("katan"), "flaky", "--error-rate", "1.0")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def routed_project(
    root: Path, katan: Katan, tiers: dict[str, list[str]], *, threshold: int = 1000, extra: str = ""
) -> Project:
    """A scripted project whose shipline.toml routes through `flaky` as `tiers` say."""
    project = make_project(root, None)
    lines = [f"{tier} = {json.dumps(chain)}" for tier, chain in tiers.items()]
    (root / "shipline.toml").write_text(
        FLAKY.format(url=katan.openai_url, threshold=threshold)
        + "\n[tiers]\n"
        + "\n".join(lines)
        + "\n"
        + extra,
        encoding="utf-8",
    )
    return project


EVERY_TIER_FLAKY_FIRST = {t: ["flaky", "script"] for t in ("top", "mid", "cheap", "local")}
EVERY_TIER_HOSTED_ONLY = {t: ["flaky"] for t in ("top", "mid", "cheap", "local")}


def add_feature(project: Project, *extra: str) -> int:
    feature = demo_ticket("feature")
    return project.add("feature", feature["title"], feature["body"], *extra)


def by_key(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {group["key"]: group for group in report["groups"]}


def test_ticket_completes_while_its_first_provider_fails_every_call(
    tmp_path: Path, flaky: Katan
) -> None:
    project = routed_project(tmp_path / "repo", flaky, EVERY_TIER_FLAKY_FIRST)
    ticket_id = add_feature(project)
    before = flaky.requests()

    project.cli("run")
    detail = project.show(ticket_id)

    assert detail["status"] == "done"
    calls = detail["calls"]
    failed = [c for c in calls if c["error"] is not None]
    answered = [c for c in calls if c["error"] is None]
    # every logical call tried flaky once (no retries, never cooling), then fell back
    assert {c["provider"] for c in failed} == {"flaky"}
    assert all("HTTP 500" in c["error"] and c["fallback"] is False for c in failed)
    assert all(c["input_tokens"] == 0 and c["cost"] == 0 for c in failed)
    assert {c["provider"] for c in answered} == {"script"}
    assert all(c["fallback"] is True for c in answered)
    assert len(failed) == len(answered) == flaky.requests() - before
    assert len(answered) == 13  # 7 producer calls and 6 validator calls, as with no outage
    # each failure is followed by the backup's answer to the same phase, role and attempt
    pairs = list(zip(calls[::2], calls[1::2], strict=True))
    assert all(
        (a["provider"], b["provider"]) == ("flaky", "script")
        and (a["phase"], a["role"], a["attempt"]) == (b["phase"], b["role"], b["attempt"])
        for a, b in pairs
    )

    report = json.loads(project.cli("cost", "--by", "provider", "--json").stdout)
    groups = by_key(report)
    assert set(groups) == {"flaky", "script"}
    assert (groups["flaky"]["calls"], groups["flaky"]["errors"]) == (13, 13)
    assert (groups["flaky"]["fallbacks"], groups["flaky"]["input_tokens"]) == (0, 0)
    assert (groups["script"]["calls"], groups["script"]["errors"]) == (13, 0)
    assert groups["script"]["fallbacks"] == 13
    assert groups["script"]["input_tokens"] == sum(c["input_tokens"] for c in answered)
    assert groups["script"]["cost"] == "$0.00"  # scripted calls are free, and known to be
    assert report["total"]["calls"] == 26
    assert report["total"]["unknown_price_calls"] == 0


def test_cooling_provider_is_skipped_without_further_requests(tmp_path: Path, flaky: Katan) -> None:
    project = routed_project(tmp_path / "repo", flaky, EVERY_TIER_FLAKY_FIRST, threshold=2)
    ticket_id = add_feature(project)
    before = flaky.requests()

    project.cli("run")
    detail = project.show(ticket_id)

    assert detail["status"] == "done"
    assert flaky.requests() - before == 2  # two failures cool it down for the whole run
    calls = detail["calls"]
    # flaky fails the first two calls, each answered by script; then it is skipped unasked
    assert [c["provider"] for c in calls] == ["flaky", "script", "flaky"] + ["script"] * 12
    assert [c["error"] is not None for c in calls[:3]] == [True, False, True]
    assert all(c["fallback"] for c in calls if c["provider"] == "script")


def test_sensitive_ticket_skips_the_hosted_provider_entirely(tmp_path: Path, flaky: Katan) -> None:
    project = routed_project(tmp_path / "repo", flaky, EVERY_TIER_FLAKY_FIRST)
    ticket_id = add_feature(project, "--sensitive")
    before = flaky.requests()

    project.cli("run")
    detail = project.show(ticket_id)

    assert detail["status"] == "done"
    assert flaky.requests() == before
    assert {c["provider"] for c in detail["calls"]} == {"script"}
    assert not any(c["fallback"] for c in detail["calls"])  # flaky was never in its chain


def test_sensitive_ticket_without_in_house_provider_goes_to_a_human_before_any_call(
    tmp_path: Path, flaky: Katan
) -> None:
    project = routed_project(tmp_path / "repo", flaky, EVERY_TIER_HOSTED_ONLY)
    ticket_id = add_feature(project, "--sensitive")
    before = flaky.requests()

    project.cli("run")
    detail = project.show(ticket_id)

    assert flaky.requests() == before
    assert detail["status"] == "needs-human"
    assert detail["phase"] == "discovery"
    assert "in_house = true" in detail["handoff_reason"]
    assert "sensitive" in detail["handoff_reason"]
    assert detail["calls"] == []


def test_route_explain_names_the_provider_each_phase_uses_and_why(
    tmp_path: Path, flaky: Katan
) -> None:
    extra = """
[phases.review]
tier = "cheap"
validator_tier = "top"

[phases.plan]
validator = false
"""
    tiers = {"top": ["flaky", "script"], "mid": ["flaky", "script"], "cheap": ["script"]}
    project = routed_project(tmp_path / "repo", flaky, tiers, extra=extra)
    normal = add_feature(project)
    sensitive = add_feature(project, "--sensitive")
    before = flaky.requests()

    plain = json.loads(project.cli("route", "explain", str(normal), "--json").stdout)
    secret = json.loads(project.cli("route", "explain", str(sensitive), "--json").stdout)
    table = project.cli("route", "explain", str(sensitive)).stdout

    assert flaky.requests() == before  # explaining calls nobody
    assert plain["runnable"] is True and plain["sensitive"] is False
    phases = {p["phase"]: p for p in plain["phases"]}
    assert list(phases) == ["discovery", "techspec", "plan", "tests", "implement", "review"]
    assert [p["status"] for p in plain["phases"]] == ["pending"] * 6
    techspec = phases["techspec"]["producer"]
    assert (techspec["tier"], techspec["chosen"], techspec["model"]) == (
        "top",
        "flaky",
        "gpt-4o-mini",
    )
    assert techspec["fallbacks"] == ["script"]
    assert techspec["reason"] == "first entry of tier 'top'"
    assert phases["discovery"]["producer"]["tier"] == "mid"
    assert phases["discovery"]["validator"]["tier"] == "cheap"
    assert phases["discovery"]["validator"]["chosen"] == "script"
    assert phases["plan"]["validator"] is None
    review = phases["review"]
    assert (review["producer"]["tier"], review["producer"]["chosen"]) == ("cheap", "script")
    assert (review["validator"]["tier"], review["validator"]["chosen"]) == ("top", "flaky")

    assert secret["runnable"] is True and secret["sensitive"] is True
    secret_techspec = {p["phase"]: p for p in secret["phases"]}["techspec"]["producer"]
    assert secret_techspec["chosen"] == "script" and secret_techspec["fallbacks"] == []
    assert secret_techspec["reason"] == (
        "entry 2 of tier 'top': flaky excluded (sensitive work: not in_house)"
    )
    assert [e["status"] for e in secret_techspec["entries"]] == ["excluded", "ready"]
    assert "sensitive: in-house providers only" in table
    assert "flaky excluded" in table


def test_route_explain_shows_a_sensitive_ticket_blocked_without_in_house_provider(
    tmp_path: Path, flaky: Katan
) -> None:
    project = routed_project(tmp_path / "repo", flaky, EVERY_TIER_HOSTED_ONLY)
    sensitive = add_feature(project, "--sensitive")
    normal = add_feature(project)

    blocked = json.loads(project.cli("route", "explain", str(sensitive), "--json").stdout)
    fine = json.loads(project.cli("route", "explain", str(normal), "--json").stdout)
    table = project.cli("route", "explain", str(sensitive)).stdout

    assert blocked["runnable"] is False
    for phase in blocked["phases"]:
        for role in (phase["producer"], phase["validator"]):
            assert role["blocked"] is True and role["chosen"] is None
            assert "no provider with in_house = true" in role["reason"]
            assert "before any call" in role["reason"]
    assert fine["runnable"] is True
    assert all(p["producer"]["chosen"] == "flaky" for p in fine["phases"])
    assert "BLOCKED" in table
    assert "cannot run as configured" in table


def test_route_explain_of_an_unknown_ticket_is_a_clear_error(tmp_path: Path, flaky: Katan) -> None:
    project = routed_project(tmp_path / "repo", flaky, EVERY_TIER_FLAKY_FIRST)
    result = project.cli("route", "explain", "7", expect=2)
    assert "TicketError: no ticket #7" in result.stderr
