"""A validator that only echoes never passes anything (issue 10, item 2).

Two real OpenAI-compatible servers on loopback serve as validators: one answers with the last
user message verbatim, the other with the whole prompt. The validator prompt describes the
verdict without a literal example, and a verdict must be the reply's final, whole JSON, so
an echo is never a verdict: each ticket ends in needs-human with "not a valid JSON verdict".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import demo_ticket, make_project
from loopback import LoopbackServer, echo_last_user, echo_prompt, loopback

CONFIG = """\
[providers.script]
kind = "scripted"
script = "script.yaml"

[providers.echo_user]
kind = "openai"
model = "echo"
base_url = "{user_url}"
max_retries = 0

[providers.echo_prompt]
kind = "openai"
model = "echo"
base_url = "{prompt_url}"
max_retries = 0

[tiers]
top = ["script"]
mid = ["script"]
cheap = ["script"]
local = ["script"]
echo_user = ["echo_user"]
echo_prompt = ["echo_prompt"]

[validator]
parse_retries = 1

[phases.diagnose]
validator_tier = "echo_user"
max_attempts = 2

[phases.discovery]
validator_tier = "echo_prompt"
max_attempts = 2
"""


@pytest.fixture
def echoes() -> Iterator[tuple[LoopbackServer, LoopbackServer]]:
    with loopback(echo_last_user) as user, loopback(echo_prompt) as prompt:
        yield user, prompt


@pytest.mark.slow
def test_an_echo_server_as_validator_passes_nothing(
    tmp_path: Path, echoes: tuple[LoopbackServer, LoopbackServer]
) -> None:
    user, prompt = echoes
    project = make_project(tmp_path / "repo", None)
    (project.root / "shipline.toml").write_text(
        CONFIG.format(user_url=user.url, prompt_url=prompt.url), encoding="utf-8"
    )
    hotfix, feature = demo_ticket("hotfix"), demo_ticket("feature")
    echoed_user = project.add("hotfix", hotfix["title"], hotfix["body"])
    echoed_prompt = project.add("feature", feature["title"], feature["body"])

    project.cli("run")

    for ticket_id, phase, server in (
        (echoed_user, "diagnose", user),
        (echoed_prompt, "discovery", prompt),
    ):
        detail = project.show(ticket_id)
        assert detail["status"] == "needs-human", detail["status"]
        assert detail["handoff_reason"].startswith(f"{phase} used 2/2 attempts")
        assert "not a valid JSON verdict after 2 tries" in detail["handoff_reason"]
        (first,) = [p for p in detail["phases"] if p["phase"] == phase]
        verdicts = [a["verdict"] for a in first["attempts"]]
        assert [(v["passed"], v["source"]) for v in verdicts] == [(False, "error")] * 2
        assert not any(p["status"] == "passed" for p in detail["phases"])
        # 2 attempts × (1 + parse_retries) calls, each echoed back and refused
        validator_calls = [c for c in detail["calls"] if c["role"] == "validator"]
        assert len(validator_calls) == len(server.received) == 4
        assert all(c["error"] is None for c in validator_calls)  # answered, just no verdict
    # the echoes really were echoes of the validator prompt, its format described in words
    last_user = user.received[0]["messages"][-1]["content"]
    assert '"pass": the JSON boolean true' in last_user
    assert "{" not in last_user.split("# Answer")[1]
