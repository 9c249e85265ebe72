"""One JSON re-ask layer: a validator that never answers a valid verdict costs exactly
`[validator] parse_retries + 1` calls per attempt, over a real HTTP server, whatever the
provider's own repair and retry settings. Each re-ask shows the model its reply and why it
was refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import demo_ticket, make_project
from loopback import Reply, chat_reply, loopback, messages_reply

GARBAGE = "Sure! Looks great to me."

TOML = """\
[providers.script]
kind = "scripted"
script = "script.yaml"

[providers.chatty]
kind = "{kind}"
model = "chatty-1"
base_url = "{url}"
max_retries = 2
failure_threshold = 1000

[tiers]
top = ["script"]
mid = ["script"]
cheap = ["chatty"]
local = ["script"]

[phases.discovery]
max_attempts = 2

[validator]
parse_retries = {parse_retries}
"""


def garbage_reply(kind: str) -> Reply:
    return chat_reply(GARBAGE) if kind == "openai" else messages_reply(GARBAGE)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("parse_retries", [0, 1])
def test_a_validator_answering_garbage_costs_parse_retries_plus_one_calls_per_attempt(
    tmp_path: Path, kind: str, parse_retries: int
) -> None:
    with loopback(garbage_reply(kind)) as server:
        url = server.url if kind == "openai" else server.anthropic_url
        project = make_project(tmp_path / "repo", None)
        (project.root / "shipline.toml").write_text(
            TOML.format(kind=kind, url=url, parse_retries=parse_retries), encoding="utf-8"
        )
        feature = demo_ticket("feature")
        ticket_id = project.add("feature", feature["title"], feature["body"])
        project.cli("run")
        received: list[dict[str, Any]] = list(server.received)

    tries = parse_retries + 1
    assert len(received) == 2 * tries  # two attempts, each asked `tries` times, no more
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    discovery = next(p for p in detail["phases"] if p["phase"] == "discovery")
    assert [a["verdict"]["source"] for a in discovery["attempts"]] == ["error", "error"]
    for attempt in discovery["attempts"]:
        objection = attempt["verdict"]["objections"][0]
        assert f"not a valid JSON verdict after {tries} tries" in objection
    validator_calls = [c for c in detail["calls"] if c["role"] == "validator"]
    assert len(validator_calls) == 2 * tries
    assert {c["provider"] for c in validator_calls} == {"chatty"}
    if parse_retries:
        reasked = received[1]["messages"]
        assert reasked[-2]["content"] == GARBAGE  # the model sees its reply ...
        assert "not valid: no JSON value found" in reasked[-1]["content"]  # ... and why
