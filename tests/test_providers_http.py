"""Providers and routing against real HTTP servers on loopback (llm-katan, and a stdlib server).

Nothing here mocks an SDK: the official `openai` and `anthropic` clients talk HTTP to
servers that fail, stall, rate-limit and refuse keys for real.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loopback import FakeClock, Katan, chat_reply, error_reply, free_port, loopback, start_katan
from shipline.config import ProviderSettings, Settings
from shipline.errors import ConfigError, ProviderError
from shipline.providers.anthropic_provider import AnthropicProvider
from shipline.providers.base import CompletionRequest, Message, Provider
from shipline.providers.guard import GuardPolicy, ProviderCallError
from shipline.providers.openai_compat import OpenAICompatProvider
from shipline.providers.registry import build_router
from shipline.providers.router import CallRecord, Router

KEY_VAR = "SHIPLINE_TEST_KEY"
ENV = {KEY_VAR: "test-key-123"}
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["verdict"],
    "properties": {"verdict": {"type": "string", "enum": ["pass", "fail"]}},
}


@pytest.fixture(scope="module")
def katans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Katan]]:
    """Five llm-katan servers, started in parallel: healthy, broken, slow, keyed, busy."""
    workdir = tmp_path_factory.mktemp("katan")
    servers = {
        "ok": start_katan(workdir, "ok"),
        "broken": start_katan(workdir, "broken", "--error-rate", "1.0"),
        "slow": start_katan(workdir, "slow", "--latency-ms", "5000", "--max-concurrent", "8"),
        "keyed": start_katan(workdir, "keyed", "--validate-keys"),
        "busy": start_katan(
            workdir, "busy", "--latency-ms", "300", "--max-inflight", "1", "--max-concurrent", "8"
        ),
    }
    try:
        for server in servers.values():
            server.wait_ready()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def ask(
    text: str = "hello from shipline", *, schema: dict[str, Any] | None = None
) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message("system", "You are terse."), Message("user", text)),
        phase="review",
        role="validator",
        attempt=1,
        max_tokens=64,
        json_schema=schema,
    )


def openai_entry(base_url: str, **overrides: object) -> ProviderSettings:
    return ProviderSettings.model_validate(
        {
            "kind": "openai",
            "model": "gpt-4o-mini",
            "base_url": base_url,
            "api_key_env": KEY_VAR,
            **overrides,
        }
    )


def anthropic_entry(base_url: str, **overrides: object) -> ProviderSettings:
    return ProviderSettings.model_validate(
        {
            "kind": "anthropic",
            "model": "claude-haiku-4-5",
            "base_url": base_url,
            "api_key_env": KEY_VAR,
            **overrides,
        }
    )


def router_for(
    entries: dict[str, ProviderSettings],
    tiers: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    key: str = ENV[KEY_VAR],
) -> Router:
    """A router built from config exactly as the engine builds it (registry.build_router)."""
    monkeypatch.setenv(KEY_VAR, key)
    return build_router(Settings(providers=entries, tiers=tiers), Path("."))


def test_openai_provider_gets_a_real_completion_with_token_counts(katans: dict[str, Katan]) -> None:
    provider = OpenAICompatProvider("groq", openai_entry(katans["ok"].openai_url), environ=ENV)

    completion = provider.complete(ask("please summarise the plan"))

    assert "User: please summarise the plan" in completion.text
    assert completion.model == "gpt-4o-mini"
    assert completion.input_tokens == 7  # katan counts words: "You are terse." + 4 words
    assert completion.output_tokens > 0


def test_anthropic_provider_sends_the_system_prompt_apart_and_counts_tokens(
    katans: dict[str, Katan],
) -> None:
    provider = AnthropicProvider("claude", anthropic_entry(katans["ok"].anthropic_url), environ=ENV)

    completion = provider.complete(ask("please review this diff"))

    assert "User: please review this diff" in completion.text
    assert "messages=2" in completion.text  # the system field, then one user turn
    assert completion.model == "claude-haiku-4-5"
    assert completion.input_tokens == 7
    assert completion.output_tokens > 0


def test_price_of_an_unlisted_server_is_unknown_unless_config_sets_it(
    katans: dict[str, Katan],
) -> None:
    url = katans["ok"].openai_url
    unlisted = OpenAICompatProvider("inhouse", openai_entry(url), environ=ENV).complete(ask())
    priced = OpenAICompatProvider(
        "inhouse",
        openai_entry(url, price_input_per_mtok=2.0, price_output_per_mtok=10.0),
        environ=ENV,
    ).complete(ask())

    assert unlisted.cost is None  # never guessed as 0, nor as gpt-4o-mini's list price
    expected = (priced.input_tokens * 2.0 + priced.output_tokens * 10.0) / 1e6
    assert priced.cost is not None and priced.cost > 0
    assert priced.cost == pytest.approx(expected)


def test_ticket_falls_back_when_first_provider_always_fails(
    katans: dict[str, Katan], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = router_for(
        {
            "primary": openai_entry(katans["broken"].openai_url, max_retries=1),
            "backup": anthropic_entry(katans["ok"].anthropic_url),
        },
        {"mid": ["primary", "backup"]},
        monkeypatch,
    )
    records: list[CallRecord] = []
    broken_before = katans["broken"].requests()

    routed = router.complete("mid", ask("implement the change"), record=records.append)

    assert routed.provider == "backup"
    assert routed.fallback is True
    assert "User: implement the change" in routed.completion.text
    assert [(r.provider, r.fallback) for r in records] == [
        ("primary", False),
        ("primary", False),
        ("backup", True),
    ]
    assert all("HTTP 500" in (r.error or "") for r in records[:2])
    assert records[2].error is None
    assert records[2].input_tokens > 0
    assert katans["broken"].requests() - broken_before == 2  # one try and one retry


def test_cooling_provider_is_skipped_without_a_call(
    katans: dict[str, Katan], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = router_for(
        {
            "primary": openai_entry(
                katans["broken"].openai_url, max_retries=0, failure_threshold=1, cooldown_s=600
            ),
            "backup": openai_entry(katans["ok"].openai_url),
        },
        {"mid": ["primary", "backup"]},
        monkeypatch,
    )
    router.complete("mid", ask())  # primary fails once and starts cooling down
    broken_before = katans["broken"].requests()
    records: list[CallRecord] = []

    routed = router.complete("mid", ask(), record=records.append)

    assert routed.provider == "backup"
    assert katans["broken"].requests() == broken_before
    assert [r.provider for r in records] == ["backup"]
    assert router.guard("primary").breaker.state == "open"


def test_retry_after_is_honoured_on_429() -> None:
    clock = FakeClock()
    with loopback(
        error_reply(429, "slow down", {"retry-after": "7"}), chat_reply("done")
    ) as server:
        entry = openai_entry(server.url, max_retries=2)
        provider = OpenAICompatProvider("groq", entry, environ=ENV)
        router = Router(
            {"groq": provider},
            {"cheap": ["groq"]},
            policies={"groq": GuardPolicy.from_settings(entry)},
            clock=clock,
        )

        routed = router.complete("cheap", ask())

    assert routed.completion.text == "done"
    assert clock.sleeps == [7.0]  # the server's wait, not the backoff schedule
    assert len(server.received) == 2


def test_retry_after_longer_than_the_limit_fails_over_at_once_and_cools_the_provider() -> None:
    clock = FakeClock()
    with (
        loopback(error_reply(429, "come back later", {"retry-after": "120"})) as limited,
        loopback(chat_reply("from backup")) as backup,
    ):
        first = openai_entry(limited.url, max_retries=3, cooldown_s=5)
        router = Router(
            {
                "groq": OpenAICompatProvider("groq", first, environ=ENV),
                "backup": OpenAICompatProvider("backup", openai_entry(backup.url), environ=ENV),
            },
            {"cheap": ["groq", "backup"]},
            policies={"groq": GuardPolicy.from_settings(first)},
            clock=clock,
        )

        routed = router.complete("cheap", ask())

        assert routed.provider == "backup"
        assert clock.sleeps == []
        assert len(limited.received) == 1
        assert router.guard("groq").breaker.remaining() == pytest.approx(120)


def test_slow_provider_hits_its_timeout_and_fails_over(
    katans: dict[str, Katan], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = router_for(
        {
            "slow": openai_entry(katans["slow"].openai_url, timeout_s=0.5, max_retries=0),
            "backup": openai_entry(katans["ok"].openai_url),
        },
        {"top": ["slow", "backup"]},
        monkeypatch,
    )
    records: list[CallRecord] = []
    started = time.monotonic()

    routed = router.complete("top", ask(), record=records.append)

    assert time.monotonic() - started < 3.0  # the server takes 5 s
    assert routed.provider == "backup"
    assert "timed out after 0.5s" in (records[0].error or "")
    assert records[0].latency_ms < 2000


def test_unauthorized_provider_fails_over_at_once_without_retries_or_leaking_the_key(
    katans: dict[str, Katan], monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "wrong-but-secret-value-42"
    router = router_for(
        {
            "hosted": openai_entry(katans["keyed"].openai_url, max_retries=3),
            "backup": openai_entry(katans["ok"].openai_url),
        },
        {"mid": ["hosted", "backup"]},
        monkeypatch,
        key=secret,
    )
    records: list[CallRecord] = []
    keyed_before = katans["keyed"].requests()

    routed = router.complete("mid", ask(), record=records.append)

    assert routed.provider == "backup"
    assert katans["keyed"].requests() - keyed_before == 1
    assert [r.provider for r in records] == ["hosted", "backup"]
    error = records[0].error or ""
    assert "authentication failed (HTTP 401)" in error
    assert secret not in error  # llm-katan echoes the key it got; we must not


def test_anthropic_errors_are_classified_like_openai_ones(katans: dict[str, Katan]) -> None:
    broken = AnthropicProvider("a", anthropic_entry(katans["broken"].anthropic_url), environ=ENV)
    keyed = AnthropicProvider("b", anthropic_entry(katans["keyed"].anthropic_url), environ=ENV)

    with pytest.raises(ProviderCallError) as server_error:
        broken.complete(ask())
    with pytest.raises(ProviderCallError) as auth_error:
        keyed.complete(ask())

    assert (server_error.value.status, server_error.value.retryable) == (500, True)
    assert (auth_error.value.status, auth_error.value.retryable) == (401, False)
    assert ENV[KEY_VAR] not in str(auth_error.value)


def test_refused_connection_is_retried_then_fails_over(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with loopback(chat_reply("alive")) as alive:
        router = router_for(
            {"dead": openai_entry(dead, max_retries=1), "alive": openai_entry(alive.url)},
            {"mid": ["dead", "alive"]},
            monkeypatch,
        )
        records: list[CallRecord] = []

        routed = router.complete("mid", ask(), record=records.append)

    assert routed.provider == "alive"
    assert [r.provider for r in records] == ["dead", "dead", "alive"]
    assert "cannot connect" in (records[0].error or "")


def test_sensitive_request_never_reaches_a_hosted_provider(
    katans: dict[str, Katan], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = router_for(
        {
            "hosted": openai_entry(katans["busy"].openai_url),
            "inhouse": openai_entry(katans["ok"].openai_url, in_house=True),
        },
        {"mid": ["hosted", "inhouse"]},
        monkeypatch,
    )
    busy_before = katans["busy"].requests()

    routed = router.complete("mid", ask(), sensitive=True)

    assert routed.provider == "inhouse"
    assert katans["busy"].requests() == busy_before


def test_sensitive_request_without_in_house_provider_is_refused_before_any_call(
    katans: dict[str, Katan], monkeypatch: pytest.MonkeyPatch
) -> None:
    router = router_for(
        {"hosted": openai_entry(katans["ok"].openai_url)}, {"mid": ["hosted"]}, monkeypatch
    )
    before = katans["ok"].requests()

    with pytest.raises(ConfigError, match="in_house = true"):
        router.complete("mid", ask(), sensitive=True)

    assert katans["ok"].requests() == before


def _burst(provider: Provider, router: Router, count: int) -> list[str]:
    outcomes: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            router.complete("cheap", ask())
            result = "ok"
        except ProviderError as exc:
            result = str(exc)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_concurrency_limit_keeps_a_small_server_under_its_limit(katans: dict[str, Katan]) -> None:
    url = katans["busy"].openai_url  # answers 503 to a second request in flight

    def router(max_concurrency: int) -> tuple[Provider, Router]:
        entry = openai_entry(
            url, max_retries=0, failure_threshold=100, max_concurrency=max_concurrency
        )
        provider = OpenAICompatProvider("small", entry, environ=ENV)
        return provider, Router(
            {"small": provider},
            {"cheap": ["small"]},
            policies={"small": GuardPolicy.from_settings(entry)},
        )

    unlimited = _burst(*router(0), count=3)
    limited = _burst(*router(1), count=3)

    assert any("HTTP 503" in outcome for outcome in unlimited)  # the limit is real
    assert limited == ["ok", "ok", "ok"]


def test_json_reply_is_parsed_from_a_server_that_ignores_response_format(
    katans: dict[str, Katan],
) -> None:
    provider = OpenAICompatProvider("groq", openai_entry(katans["ok"].openai_url), environ=ENV)

    completion = provider.complete(ask('answer {"verdict": "pass"}', schema=VERDICT_SCHEMA))

    assert json.loads(completion.text) == {"verdict": "pass"}


def test_json_repair_gives_up_after_the_limit_and_bills_every_try(
    katans: dict[str, Katan],
) -> None:
    provider = AnthropicProvider("claude", anthropic_entry(katans["ok"].anthropic_url), environ=ENV)
    before = katans["ok"].requests()

    with pytest.raises(ProviderCallError, match="no schema-valid JSON after 3 tries") as caught:
        provider.complete(ask("no json here", schema=VERDICT_SCHEMA))

    assert katans["ok"].requests() - before == 3
    assert caught.value.retryable is False
    assert caught.value.provider_fault is False
    assert caught.value.usage is not None
    assert caught.value.usage.output_tokens > 0


def test_server_that_rejects_json_schema_is_asked_by_prompt_and_repaired() -> None:
    with loopback(
        error_reply(400, "response_format json_schema is not supported"),
        chat_reply("Sure! The verdict is pass."),
        chat_reply('```json\n{"verdict": "pass"}\n```', prompt_tokens=20, completion_tokens=5),
    ) as server:
        provider = OpenAICompatProvider("ollama", openai_entry(server.url), environ=ENV)

        completion = provider.complete(ask("review it", schema=VERDICT_SCHEMA))

    assert json.loads(completion.text) == {"verdict": "pass"}
    native, prompted, repaired = server.received
    assert native["response_format"]["type"] == "json_schema"
    assert "response_format" not in prompted
    assert '"verdict"' in prompted["messages"][0]["content"]  # the schema, in the prompt
    assert "not valid" in repaired["messages"][-1]["content"]
    assert (completion.input_tokens, completion.output_tokens) == (27, 8)  # both tries billed


def test_missing_key_variable_is_a_config_error_naming_it() -> None:
    entry = openai_entry("", api_key_env="SHIPLINE_NO_SUCH_KEY")

    with pytest.raises(ConfigError, match="SHIPLINE_NO_SUCH_KEY is not set"):
        OpenAICompatProvider("openai", entry, environ={})
