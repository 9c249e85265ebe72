"""The pure decisions of routing: backoff, retry-after, circuit breaker, limits, pricing, JSON.

Time is a `FakeClock`, so nothing here sleeps for real.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import pytest
from genai_prices import Usage, calc_price

from loopback import FakeClock
from shipline.config import ProviderSettings
from shipline.errors import BudgetExceeded, ConfigError, ProviderError
from shipline.providers.base import Completion, CompletionRequest, Message, Provider
from shipline.providers.guard import (
    CircuitBreaker,
    Guard,
    GuardPolicy,
    Limiter,
    ProviderCallError,
    RetryPolicy,
    failure_from_status,
    parse_retry_after,
)
from shipline.providers.hosted import NO_KEY, Redactor, api_key_from_env
from shipline.providers.pricing import call_cost, table_price
from shipline.providers.router import CallRecord, Router
from shipline.providers.structured import complete_json, parse_json, schema_problems

REQUEST = CompletionRequest(
    messages=(Message("user", "hi"),), phase="plan", role="producer", attempt=1
)
DONE = Completion(text="done", model="m", input_tokens=10, output_tokens=2, cost=0.5)


class SequenceProvider:
    """A provider that answers with the given outcomes in order and counts its calls."""

    def __init__(
        self, name: str, outcomes: Iterable[Completion | ProviderError], *, in_house: bool = False
    ) -> None:
        self.name = name
        self.in_house = in_house
        self.model = f"{name}-model"
        self._outcomes = list(outcomes)
        self.calls = 0

    def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        outcome = self._outcomes.pop(0) if len(self._outcomes) > 1 else self._outcomes[0]
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome


def server_error(status: int = 500, retry_after: float | None = None) -> ProviderCallError:
    return failure_from_status(status, "boom", retry_after=retry_after)


def guard(
    provider: SequenceProvider, clock: FakeClock, *, retries: int = 2, threshold: int = 3
) -> Guard:
    policy = GuardPolicy(RetryPolicy(max_retries=retries), threshold, cooldown_s=60.0)
    return Guard(provider, policy, clock=clock, jitter=lambda: 1.0)


# --- backoff and retry-after ---------------------------------------------------------------


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    assert [policy.delay(n, retry_after=None) for n in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        4.0,
        4.0,
    ]


def test_jitter_shortens_the_backoff_by_at_most_half() -> None:
    policy = RetryPolicy(base_delay_s=1.0)
    assert policy.delay(2, retry_after=None, jitter=0.75) == 1.5
    assert policy.delay(2, retry_after=None, jitter=0.1) == 1.0  # clamped to half
    assert policy.delay(2, retry_after=None, jitter=3.0) == 2.0  # never longer


def test_retry_after_replaces_the_backoff_unless_it_is_too_long() -> None:
    policy = RetryPolicy(max_retry_after_s=30.0)
    assert policy.delay(1, retry_after=12.0) == 12.0
    assert policy.delay(1, retry_after=31.0) is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_is_read_in_every_form(
    headers: dict[str, str], seconds: float | None
) -> None:
    now = 1445412480.0  # 2015-10-21 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == seconds


@pytest.mark.parametrize(
    ("status", "retryable", "provider_fault", "reason"),
    [
        (429, True, True, "rate limited"),
        (500, True, True, "server error"),
        (503, True, True, "server error"),
        (529, True, True, "server error"),
        (408, True, True, "request timed out"),
        (401, False, True, "authentication failed"),
        (403, False, True, "permission denied"),
        (404, False, True, "not found"),
        (400, False, False, "request refused"),
        (422, False, False, "request refused"),
    ],
)
def test_http_statuses_are_classified_for_retry_and_cooldown(
    status: int, retryable: bool, provider_fault: bool, reason: str
) -> None:
    error = failure_from_status(status, "detail")
    assert (error.retryable, error.provider_fault, error.status) == (
        retryable,
        provider_fault,
        status,
    )
    assert reason in str(error)


def test_exhausted_quota_is_not_retried_even_though_it_is_a_429() -> None:
    assert (
        failure_from_status(429, "You exceeded your quota [insufficient_quota]").retryable is False
    )


# --- circuit breaker -----------------------------------------------------------------------


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, cooldown_s=60, clock=clock)
    breaker.failure()
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    assert breaker.state == "open"
    assert breaker.remaining() == 60


def test_a_success_resets_the_consecutive_failures() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=60, clock=FakeClock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_after_cooldown_one_trial_goes_through_and_its_failure_reopens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=60, clock=clock)
    breaker.failure()
    clock.advance(60)
    assert breaker.state == "half-open"
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.remaining() == 60


def test_a_successful_trial_closes_the_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=1, cooldown_s=60, clock=clock)
    breaker.failure()
    clock.advance(61)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()


# --- guard: retries, cooldown, limits --------------------------------------------------------


def test_guard_retries_server_errors_with_backoff_then_gives_up() -> None:
    clock = FakeClock()
    provider = SequenceProvider("p", [server_error(502)])
    with pytest.raises(ProviderCallError, match="HTTP 502"):
        guard(provider, clock, retries=2, threshold=10).complete(REQUEST)
    assert provider.calls == 3
    assert clock.sleeps == [0.5, 1.0]


def test_guard_returns_the_first_success_after_a_transient_failure() -> None:
    clock = FakeClock()
    provider = SequenceProvider("p", [server_error(503), DONE])
    assert guard(provider, clock).complete(REQUEST) is DONE
    assert provider.calls == 2


def test_guard_does_not_retry_auth_or_missing_model_errors() -> None:
    for status in (401, 403, 404):
        clock = FakeClock()
        provider = SequenceProvider("p", [server_error(status), DONE])
        with pytest.raises(ProviderCallError):
            guard(provider, clock, retries=5).complete(REQUEST)
        assert provider.calls == 1
        assert clock.sleeps == []


def test_guard_stops_retrying_once_the_provider_starts_cooling_down() -> None:
    clock = FakeClock()
    provider = SequenceProvider("p", [server_error(500)])
    g = guard(provider, clock, retries=5, threshold=2)
    with pytest.raises(ProviderCallError, match="HTTP 500"):
        g.complete(REQUEST)
    assert provider.calls == 2
    assert g.breaker.state == "open"


def test_request_faults_do_not_cool_the_provider_down() -> None:
    provider = SequenceProvider("p", [server_error(400)])
    g = guard(provider, FakeClock(), threshold=1)
    with pytest.raises(ProviderCallError):
        g.complete(REQUEST)
    assert g.breaker.state == "closed"


def test_a_long_retry_after_cools_the_provider_for_that_long() -> None:
    clock = FakeClock()
    provider = SequenceProvider("p", [server_error(429, retry_after=300.0)])
    g = guard(provider, clock, retries=3, threshold=10)
    with pytest.raises(ProviderCallError):
        g.complete(REQUEST)
    assert provider.calls == 1
    assert clock.sleeps == []
    assert g.breaker.remaining() == 300


def test_embedded_and_scripted_providers_are_not_retried() -> None:
    for kind in ("local", "scripted"):
        policy = GuardPolicy.from_settings(ProviderSettings(kind=kind, max_retries=4))
        assert policy.retry.max_retries == 0
    hosted = GuardPolicy.from_settings(ProviderSettings(kind="openai", max_retries=4, rpm=30))
    assert (hosted.retry.max_retries, hosted.rpm) == (4, 30)


def test_rpm_limit_waits_until_the_oldest_request_leaves_the_minute() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=2, max_concurrency=0, clock=clock)
    for _ in range(2):
        with limiter.slot():
            clock.advance(1)
    with limiter.slot():
        pass
    assert clock.sleeps == [58.0]  # first request at t=0, now t=2: wait until t=60


def test_unlimited_rpm_never_waits() -> None:
    clock = FakeClock()
    limiter = Limiter(rpm=0, max_concurrency=0, clock=clock)
    for _ in range(100):
        with limiter.slot():
            pass
    assert clock.sleeps == []


# --- router ----------------------------------------------------------------------------------


def test_router_skips_a_cooling_provider_without_calling_it() -> None:
    clock = FakeClock()
    first = SequenceProvider("first", [server_error(500)])
    second = SequenceProvider("second", [DONE])
    router = Router(
        {"first": first, "second": second},
        {"mid": ["first", "second"]},
        policies={"first": GuardPolicy(failure_threshold=1, cooldown_s=30)},
        clock=clock,
    )
    router.complete("mid", REQUEST)
    records: list[CallRecord] = []

    routed = router.complete("mid", REQUEST, record=records.append)

    assert first.calls == 1
    assert (routed.provider, routed.fallback) == ("second", True)
    assert [r.provider for r in records] == ["second"]
    clock.advance(30)
    router.complete("mid", REQUEST)
    assert first.calls == 2  # the trial after the cooldown


def test_router_names_every_reason_when_the_whole_chain_fails() -> None:
    router = Router(
        {
            "a": SequenceProvider("a", [server_error(401)]),
            "b": SequenceProvider("b", [server_error(404)]),
        },
        {"top": ["a", "b"]},
    )
    with pytest.raises(ProviderError) as caught:
        router.complete("top", REQUEST)
    message = str(caught.value)
    assert "a: authentication failed (HTTP 401)" in message
    assert "b: model '' or endpoint not found (HTTP 404)" in message
    assert caught.value.retryable is False


def test_router_records_each_try_with_tokens_spent_even_when_it_failed() -> None:
    spent = Completion(text="x", model="m", input_tokens=40, output_tokens=9, cost=0.25)
    failed = ProviderCallError("no JSON", retryable=False, provider_fault=False, usage=spent)
    router = Router(
        {"a": SequenceProvider("a", [failed]), "b": SequenceProvider("b", [DONE])},
        {"cheap": ["a", "b"]},
    )
    records: list[CallRecord] = []
    router.complete("cheap", REQUEST, record=records.append)
    assert [(r.provider, r.input_tokens, r.cost, r.fallback) for r in records] == [
        ("a", 40, 0.25, False),
        ("b", 10, 0.5, True),
    ]
    assert records[0].error == "no JSON"


def test_sensitive_work_with_no_in_house_provider_is_refused_before_any_call() -> None:
    hosted = SequenceProvider("hosted", [DONE])
    router = Router({"hosted": hosted}, {"mid": ["hosted"]})
    with pytest.raises(ConfigError, match="in_house = true"):
        router.complete("mid", REQUEST, sensitive=True)
    assert hosted.calls == 0


def test_explain_shows_cooling_and_excluded_entries_with_their_reasons() -> None:
    clock = FakeClock()
    router = Router(
        {
            "groq": SequenceProvider("groq", [server_error(503)]),
            "inhouse": SequenceProvider("inhouse", [DONE], in_house=True),
        },
        {"cheap": ["groq", "inhouse"]},
        policies={"groq": GuardPolicy(failure_threshold=1, cooldown_s=90)},
        clock=clock,
    )
    router.complete("cheap", REQUEST)

    hosted, inhouse = router.explain("cheap")
    assert (hosted.provider, hosted.model, hosted.status) == ("groq", "groq-model", "cooling")
    assert hosted.reason == "1 consecutive failures, 90s of cooldown left"
    assert (inhouse.status, inhouse.reason) == ("ready", "")
    assert [e.status for e in router.explain("cheap", sensitive=True)] == ["excluded", "ready"]


# --- the router as a provider ---------------------------------------------------------------


def test_a_bound_router_is_a_provider_that_falls_back_and_records_each_call() -> None:
    first = SequenceProvider("first", [server_error(401)])
    second = SequenceProvider("second", [DONE])
    router = Router({"first": first, "second": second}, {"mid": ["first", "second"]})
    records: list[CallRecord] = []
    hooks: list[str] = []

    provider = router.bind(
        "mid",
        record=records.append,
        before_call=lambda: hooks.append("before"),
        after_call=lambda: hooks.append(f"after {len(records)} records"),
    )
    completion = provider.complete(REQUEST)

    assert isinstance(provider, Provider)
    assert completion == DONE
    assert [(r.provider, r.fallback) for r in records] == [("first", False), ("second", True)]
    assert hooks == ["before", "after 2 records"]
    assert provider.in_house is False  # a hosted entry may answer


def test_a_bound_router_refuses_a_call_its_before_hook_refuses() -> None:
    """The engine's budget check: raising before the call means no call goes out."""
    hosted = SequenceProvider("hosted", [DONE])
    router = Router({"hosted": hosted}, {"mid": ["hosted"]})

    def over_budget() -> None:
        raise BudgetExceeded("budget reached")

    with pytest.raises(BudgetExceeded):
        router.bind("mid", before_call=over_budget).complete(REQUEST)
    assert hosted.calls == 0


def test_a_bound_router_for_sensitive_work_only_reaches_in_house_providers() -> None:
    hosted = SequenceProvider("hosted", [DONE])
    inhouse = SequenceProvider("inhouse", [DONE], in_house=True)
    router = Router({"hosted": hosted, "inhouse": inhouse}, {"mid": ["hosted", "inhouse"]})

    sensitive = router.bind("mid", sensitive=True)
    sensitive.complete(REQUEST)

    assert (hosted.calls, inhouse.calls) == (0, 1)
    assert sensitive.in_house is True
    only_hosted = Router({"hosted": hosted}, {"mid": ["hosted"]}).bind("mid", sensitive=True)
    with pytest.raises(ConfigError, match="in_house = true"):
        only_hosted.complete(REQUEST)
    assert hosted.calls == 0


# --- pricing ---------------------------------------------------------------------------------


def test_embedded_and_scripted_providers_cost_nothing() -> None:
    for kind in ("local", "scripted"):
        settings = ProviderSettings(kind=kind)
        assert call_cost(settings, "whatever", input_tokens=10**6, output_tokens=10**6) == 0.0


def test_unknown_price_is_none_never_zero() -> None:
    settings = ProviderSettings(kind="openai", model="our-finetune-7b")
    assert call_cost(settings, "our-finetune-7b", input_tokens=1000, output_tokens=10) is None


def test_a_listed_model_on_an_in_house_server_is_not_priced_as_the_hosted_api() -> None:
    settings = ProviderSettings(kind="openai", model="gpt-4o", base_url="http://10.0.0.5:8000/v1")
    assert call_cost(settings, "gpt-4o", input_tokens=1000, output_tokens=10) is None


def test_list_price_comes_from_genai_prices() -> None:
    settings = ProviderSettings(kind="openai", model="gpt-4o")
    expected = calc_price(
        Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=400),
        "gpt-4o",
        provider_id="openai",
    )
    cost = call_cost(settings, "gpt-4o", input_tokens=1000, output_tokens=200, cached_tokens=400)
    assert cost == pytest.approx(float(expected.total_price))
    uncached = call_cost(settings, "gpt-4o", input_tokens=1000, output_tokens=200)
    assert uncached is not None and cost is not None and cost < uncached


def test_hosts_are_told_apart_by_base_url() -> None:
    groq = table_price(
        "llama-3.3-70b-versatile",
        kind="openai",
        base_url="https://api.groq.com/openai/v1",
        input_tokens=10**6,
        output_tokens=0,
    )
    assert groq is not None and groq.input_usd > 0


def test_config_prices_override_the_table() -> None:
    settings = ProviderSettings(
        kind="anthropic",
        model="claude-sonnet-4-5",
        price_input_per_mtok=1.0,
        price_output_per_mtok=2.0,
    )
    cost = call_cost(settings, "claude-sonnet-4-5", input_tokens=3_000_000, output_tokens=500_000)
    assert cost == pytest.approx(4.0)


def test_one_override_with_an_unlisted_model_is_still_unknown() -> None:
    settings = ProviderSettings(kind="openai", model="ours", price_input_per_mtok=1.0)
    assert call_cost(settings, "ours", input_tokens=1000, output_tokens=1000) is None


# --- structured output, keys ---------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "required": ["verdict", "objections"],
    "properties": {
        "verdict": {"enum": ["pass", "fail"]},
        "objections": {"type": "array", "items": {"type": "string"}},
    },
}


@pytest.mark.parametrize(
    "text",
    [
        '{"verdict": "pass", "objections": []}',
        'Here you go:\n```json\n{"verdict": "pass", "objections": []}\n```',
        '[note] {"x": 1} then {"verdict": "pass", "objections": []}',
    ],
)
def test_json_is_found_in_plain_fenced_or_chatty_replies(text: str) -> None:
    assert parse_json(text, SCHEMA) == ({"verdict": "pass", "objections": []}, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"verdict": "pass", "objections": []} done', "the JSON is not the final element"),
        (
            'Example: {"verdict": "fail"} mine: {"verdict": "pass", "objections": []}',
            "the reply holds more than one JSON answer",
        ),
    ],
)
def test_json_that_is_not_the_replys_final_and_only_answer_is_refused(
    text: str, problem: str
) -> None:
    value, said = parse_json(text, SCHEMA)

    assert value is None
    assert said is not None and said.startswith(problem), said


def test_schema_problems_say_where_the_value_is_wrong() -> None:
    assert schema_problems({"verdict": "maybe", "objections": [1]}, SCHEMA) == [
        "$.verdict should be one of ['pass', 'fail'], got 'maybe'",
        "$.objections[0] should be string, got int",
    ]
    assert schema_problems({"verdict": "pass"}, SCHEMA) == ["$.objections is missing"]
    assert schema_problems(True, {"type": "integer"}) == ["$ should be integer, got bool"]


def test_repair_shows_the_model_its_reply_and_what_was_wrong() -> None:
    replies = iter(['{"verdict": "maybe"}', '{"verdict": "fail", "objections": ["no tests"]}'])
    seen: list[list[Message]] = []

    def send(messages: list[Message]) -> Completion:
        seen.append(messages)
        return Completion(text=next(replies), model="m", input_tokens=5, output_tokens=3, cost=0.1)

    result = complete_json(send, [Message("user", "review")], SCHEMA, repairs=2)

    assert json.loads(result.text) == {"verdict": "fail", "objections": ["no tests"]}
    assert (result.input_tokens, result.output_tokens) == (10, 6)
    assert result.cost == pytest.approx(0.2)
    assert seen[0][0].role == "system" and '"verdict"' in seen[0][0].content
    assert seen[1][-2] == Message("assistant", '{"verdict": "maybe"}')
    assert "$.verdict should be one of" in seen[1][-1].content


def test_keyless_local_servers_need_no_key_but_hosted_apis_do() -> None:
    local = ProviderSettings(kind="openai", model="m", base_url="http://127.0.0.1:11434/v1")
    assert api_key_from_env("ollama", local, {}) == NO_KEY
    with pytest.raises(ConfigError, match=r"\[providers.openai\] needs api_key_env"):
        api_key_from_env("openai", ProviderSettings(kind="openai", model="m"), {})


def test_redactor_masks_its_own_key_whatever_its_shape() -> None:
    mask = Redactor("plain-inhouse-key")
    out = mask("got 'plain-inhouse-key', also sk-proj-Abc123DEF456ghi789JKL012mno345")
    assert "plain-inhouse-key" not in out
    assert "Abc123DEF456" not in out
