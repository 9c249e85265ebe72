"""A call is on the bill before it is sent (issue 10, item 3).

The engine commits each provider call as started, with its input tokens estimated, before the
request leaves, and settles it once it answers. A worker SIGKILLed while a loopback server
holds its request open leaves the call in the calls table as an estimate: `shipline cost`
shows it apart, and the budget counts it, so the next worker stops the ticket.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from conftest import Project, demo_ticket, make_project
from loopback import FakeClock, LoopbackServer, Reply, chat_reply, error_reply, loopback
from shipline.config import ProviderSettings
from shipline.costs import usd
from shipline.engine.project import open_project
from shipline.errors import ProviderError, StoreError
from shipline.providers.base import CompletionRequest, Message
from shipline.providers.guard import GuardPolicy
from shipline.providers.openai_compat import OpenAICompatProvider
from shipline.providers.router import CallRecord, Router
from shipline.providers.scripted import ScriptedProvider
from shipline.store import models as m

PRICE_PER_MTOK = 1000.0  # USD per million input tokens: a prompt costs dollars, visibly

CONFIG = f"""\
[providers.held]
kind = "openai"
model = "gpt-4o-mini"
base_url = "{{url}}"
timeout_s = 120
max_retries = 0
price_input_per_mtok = {PRICE_PER_MTOK}
price_output_per_mtok = {PRICE_PER_MTOK}

[tiers]
top = ["held"]
mid = ["held"]
cheap = ["held"]
local = ["held"]

[budgets]
per_ticket_usd = 0.01

[worker]
lease_s = 1.0
heartbeat_s = 0.25
poll_s = 0.1
"""


@pytest.fixture
def held() -> Iterator[LoopbackServer]:
    """A server that takes the request and never answers (until the test ends)."""
    with loopback(Reply(delay_s=600)) as server:
        yield server


def calls(project: Project) -> list[m.Call]:
    opened = open_project(project.root, db=project.db_url)
    try:
        with opened.store.session() as session:
            rows = list(session.scalars(select(m.Call).order_by(m.Call.id)))
            session.expunge_all()
            return rows
    finally:
        opened.close()


@pytest.mark.slow
def test_a_call_cut_off_by_a_killed_worker_stays_on_the_bill_as_an_estimate(
    tmp_path: Path, held: LoopbackServer
) -> None:
    project = make_project(tmp_path / "repo", None)
    (project.root / "shipline.toml").write_text(CONFIG.format(url=held.url), encoding="utf-8")
    hotfix = demo_ticket("hotfix")
    ticket_id = project.add("hotfix", hotfix["title"], hotfix["body"])
    worker = subprocess.Popen(
        [sys.executable, "-m", "shipline", "work"],
        cwd=project.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert held.arrived.wait(60), "the worker never sent its call"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

    (call,) = calls(project)
    assert (call.ticket_id, call.phase, call.role, call.provider) == (
        ticket_id,
        "diagnose",
        "producer",
        "held",
    )
    assert call.estimated is True and call.error is None
    sent = held.received[0]["messages"]
    prompt_chars = sum(len(turn["content"]) for turn in sent)
    assert call.input_tokens == pytest.approx(prompt_chars / 4, abs=len(sent))
    assert call.output_tokens == 0
    assert call.cost == pytest.approx(call.input_tokens * PRICE_PER_MTOK / 1e6)

    report = json.loads(project.cli("cost", "--json").stdout)["total"]
    assert (report["calls"], report["estimated_calls"]) == (1, 1)
    assert report["input_tokens"] == call.input_tokens
    assert report["cost_usd"] == 0.0  # nothing known was spent…
    assert report["estimated_usd"] == pytest.approx(call.cost)  # …but this much, about
    assert report["cost"] == f"$0.00 + ~{usd(call.cost)} estimated"
    assert "estimated" in project.cli("cost").stdout

    # the next worker takes the step over and the budget, counting the estimate, stops it
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    spent = usd(call.cost)
    assert f"spent {spent} (~{spent} of it estimated)" in detail["handoff_reason"]
    assert len(held.received) == 1  # no second call went out
    assert [c["estimated"] for c in detail["calls"]] == [True]


def test_a_call_that_answers_settles_its_started_row_with_what_it_used(tmp_path: Path) -> None:
    script = tmp_path / "script.yaml"
    script.write_text(
        "rules:\n  - phase: review\n    reply: fine\n    tokens: {input: 50, output: 7}\n"
    )
    provider = ScriptedProvider.from_file("script", script, prices=(2.0, 4.0))
    router = Router({"script": provider}, {"mid": ["script"]})
    started: list[CallRecord] = []
    settled: list[CallRecord] = []
    request = CompletionRequest(
        messages=(Message("user", "x" * 400),), phase="review", role="producer", attempt=1
    )

    router.complete("mid", request, record=settled.append, started=started.append)

    (before,), (after,) = started, settled
    assert before.key == after.key != 0
    assert (before.estimated, before.input_tokens, before.output_tokens) == (True, 100, 0)
    assert before.cost == pytest.approx(100 * 2.0 / 1e6)  # the input, at the input price
    assert (after.estimated, after.input_tokens, after.output_tokens) == (False, 50, 7)
    assert after.cost == pytest.approx((50 * 2.0 + 7 * 4.0) / 1e6)


def test_a_refused_start_sends_nothing_and_leaves_no_trial_open() -> None:
    clock = FakeClock()
    with loopback(error_reply(500, "down"), chat_reply("ok")) as server:
        provider = OpenAICompatProvider(
            "p", ProviderSettings(kind="openai", model="m", base_url=server.url)
        )
        router = Router(
            {"p": provider},
            {"mid": ["p"]},
            policies={"p": GuardPolicy(failure_threshold=1, cooldown_s=60)},
            clock=clock,
        )
        request = CompletionRequest(
            messages=(Message("user", "hi"),), phase="review", role="producer", attempt=1
        )
        with pytest.raises(ProviderError, match="HTTP 500"):
            router.complete("mid", request)
        clock.advance(61)  # cooled down: one trial call may go

        def refuse(_call: CallRecord) -> None:
            raise StoreError("the store is gone")

        with pytest.raises(StoreError, match="the store is gone"):
            router.complete("mid", request, started=refuse)
        answered = router.complete("mid", request)  # the trial is still free

        assert len(server.received) == 2  # the refused call never went out
    assert answered.completion.text == "ok"
    assert router.guard("p").breaker.state == "closed"
