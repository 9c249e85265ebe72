"""Whatever an HTTP provider answers, it is a completion or a failed call, never a crash.

A real stdlib server on loopback (tests/loopback.py) answers the official `openai` and
`anthropic` SDKs with what proxies and broken servers send: HTML error pages with HTTP 200,
plain text, JSON of the wrong shape, bodies cut short, empty, huge or trickling past the
timeout, and seeded random bytes. Each must be a `ProviderCallError` that names the server and
what came back, retried and cooled down like a 5xx. Nothing here streams (the providers do
not ask for SSE), so there are no streams to cut short.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Project, demo_ticket, make_project
from loopback import (
    LoopbackServer,
    Reply,
    chat_reply,
    loopback,
    messages_reply,
    raw_reply,
)
from shipline.config import ProviderSettings
from shipline.errors import ProviderError
from shipline.providers.anthropic_provider import AnthropicProvider, read_message
from shipline.providers.base import CompletionRequest, Message
from shipline.providers.guard import GuardPolicy, ProviderCallError
from shipline.providers.hosted import MAX_BODY_BYTES, ShapeError
from shipline.providers.openai_compat import OpenAICompatProvider, read_chat_completion
from shipline.providers.router import CallRecord, Router

HTML = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"


def ask(schema: dict[str, Any] | None = None) -> CompletionRequest:
    return CompletionRequest(
        messages=(Message("system", "You are terse."), Message("user", "hello")),
        phase="review",
        role="validator",
        attempt=1,
        max_tokens=64,
        json_schema=schema,
        json_repairs=None,
    )


def provider_for(
    kind: str, server: LoopbackServer, timeout_s: float = 2.0
) -> OpenAICompatProvider | AnthropicProvider:
    url = server.url if kind == "openai" else server.anthropic_url
    settings = ProviderSettings.model_validate(
        {"kind": kind, "model": "m", "base_url": url, "timeout_s": timeout_s}
    )
    if kind == "openai":
        return OpenAICompatProvider("proxy", settings)
    return AnthropicProvider("proxy", settings)


def chat(message: Any, **extra: Any) -> Reply:
    """An OpenAI chat completion whose first choice's message is `message`."""
    return Reply(body={"choices": [{"index": 0, "message": message}], **extra})


def msg(content: Any, **extra: Any) -> Reply:
    """An Anthropic message whose content is `content`."""
    return Reply(body={"type": "message", "content": content, **extra})


@dataclass(frozen=True)
class Case:
    name: str
    reply: Reply
    error: str  # what the failed call's error must say


# What either kind of server may send that is no answer at all.
COMMON = [
    Case("html 200", raw_reply(HTML, "text/html"), "HTTP 200 text/html body is not JSON: '<html>"),
    Case(
        "plain text",
        raw_reply(b"upstream connect error", "text/plain; charset=utf-8"),
        "HTTP 200 text/plain body is not JSON: 'upstream connect error'",
    ),
    Case("not json, json type", raw_reply(b"{'pass': true"), "application/json body is not JSON"),
    Case("no content type", raw_reply(b"oops", ""), "HTTP 200 untyped body is not JSON"),
    Case("empty", raw_reply(b""), "HTTP 200 application/json body is empty"),
    Case("blank", raw_reply(b"  \n"), "body is empty"),
    Case("not utf-8", raw_reply(b"\xff\xfe\x00{"), "body is not JSON"),
    Case("deep nesting", raw_reply(b"[" * 100_000), "body is not JSON"),
    Case(
        "cut short",
        raw_reply(b'{"choices": [{"mess', declared_length=4096),
        "body broke off after",
    ),
    Case(
        "trickling past the timeout",
        raw_reply(b'{"choices": []}' * 20, drip_s=0.15, drip_bytes=4),
        "still coming 1s after the request",
    ),
    Case(
        "held past the timeout",
        raw_reply(b"{}", delay_s=1.5),
        "timed out after 1s",
    ),
    Case(
        "huge",
        raw_reply(b'{"x": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}'),
        "body is over 8 MiB: stopped reading it there",
    ),
    Case("a list", Reply(body=[1, 2, 3]), "$ is a list, not an object"),
    Case("a string", Reply(body="ok"), "$ is a string, not an object"),
    Case("null", Reply(body=None), "$ is null, not an object"),
    Case(
        "an error object",
        Reply(body={"error": {"message": "model overloaded", "type": "overloaded_error"}}),
        "HTTP 200 carries an error: model overloaded [overloaded_error]",
    ),
    Case(
        "a key in the page",
        raw_reply(f"<html>bad key {SECRET}</html>".encode(), "text/html"),
        "bad key sk-***",
    ),
]

OPENAI = [
    Case("no choices", Reply(body={"id": "x"}), "$.choices is missing"),
    Case("null choices", Reply(body={"choices": None}), "$.choices is null"),
    Case("empty choices", Reply(body={"choices": []}), "$.choices is empty"),
    Case("choices not a list", Reply(body={"choices": {"0": 1}}), "$.choices is an object"),
    Case("choice not an object", Reply(body={"choices": ["hi"]}), "$.choices[0] is a string"),
    Case("no message", Reply(body={"choices": [{"text": "hi"}]}), "message is missing"),
    Case("message a string", chat("hi"), "$.choices[0].message is a string, not an object"),
    Case("content a number", chat({"content": 5}), "message.content is an integer, not a"),
    Case("content a list", chat({"content": ["a"]}), "message.content is a list"),
    Case("tool_calls an object", chat({"tool_calls": {}}), "message.tool_calls is an object"),
    Case("tool call a string", chat({"tool_calls": ["f"]}), "tool_calls[0] is a string"),
    Case(
        "tool call without a name",
        chat({"tool_calls": [{"id": "1", "function": {"arguments": "{}"}}]}),
        "tool_calls[0].function.name is missing",
    ),
    Case("usage a string", chat({"content": "hi"}, usage="lots"), "$.usage is a string"),
    Case(
        "tokens as text",
        chat({"content": "hi"}, usage={"prompt_tokens": "7"}),
        "$.usage.prompt_tokens is a string, not a count",
    ),
    Case(
        "negative tokens",
        chat({"content": "hi"}, usage={"completion_tokens": -3}),
        "$.usage.completion_tokens is an integer, not a count",
    ),
    Case(
        "tokens past any window",
        chat({"content": "hi"}, usage={"prompt_tokens": 2**40}),
        "$.usage.prompt_tokens is an integer, not a count (a whole number from 0 to 100000000)",
    ),
    Case("model a number", chat({"content": "hi"}, model=4), "$.model is an integer"),
]

ANTHROPIC = [
    Case("no content", Reply(body={"type": "message"}), "$.content is missing"),
    Case("null content", msg(None), "$.content is null"),
    Case("content a string", msg("hi"), "$.content is a string, not a list"),
    Case("block a string", msg(["hi"]), "$.content[0] is a string, not an object"),
    Case("text block without text", msg([{"type": "text"}]), "$.content[0].text is missing"),
    Case("null text", msg([{"type": "text", "text": None}]), "$.content[0].text is null"),
    Case("text a number", msg([{"type": "text", "text": 1}]), "$.content[0].text is an integer"),
    Case("type a list", msg([{"type": ["text"]}]), "$.content[0].type is a list"),
    Case("tool use without a name", msg([{"type": "tool_use", "id": "1"}]), ".name is missing"),
    Case("usage a list", msg([], usage=[1]), "$.usage is a list"),
    Case(
        "tokens as floats",
        msg([], usage={"input_tokens": 1.5, "output_tokens": 1}),
        "$.usage.input_tokens is a number, not a count",
    ),
]


def cases(kind_cases: list[Case]) -> list[Any]:
    return [pytest.param(c, id=c.name) for c in COMMON + kind_cases]


def assert_failed_call(kind: str, case: Case) -> None:
    with loopback(case.reply) as server:
        provider = provider_for(kind, server, timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(ProviderCallError) as caught:
            provider.complete(ask())
        took = time.monotonic() - started
    error = caught.value
    assert case.error in str(error), str(error)
    assert provider.base_url in str(error)  # which server said it
    assert error.retryable and error.provider_fault  # like a 5xx: retried, then cooled down
    assert SECRET not in str(error)
    assert len(str(error)) < 700
    assert took < 3.0  # a body is never waited for past the timeout (1 s, one read late)


@pytest.mark.parametrize("case", cases(OPENAI))
def test_an_openai_reply_that_is_no_completion_is_a_failed_call(case: Case) -> None:
    assert_failed_call("openai", case)


@pytest.mark.parametrize("case", cases(ANTHROPIC))
def test_an_anthropic_reply_that_is_no_message_is_a_failed_call(case: Case) -> None:
    assert_failed_call("anthropic", case)


@pytest.mark.parametrize(
    ("kind", "reply", "text"),
    [
        ("openai", chat({"role": "assistant", "content": None}), ""),  # nothing said
        ("openai", chat({"content": "hi"}, usage=None, model=None), "hi"),  # no usage, no model
        ("openai", chat({"content": "hi"}, model="m" * 5000), "hi"),  # a name cut to fit
        ("openai", raw_reply(json.dumps(chat_reply("ok").body).encode(), "text/plain"), "ok"),
        ("anthropic", msg([]), ""),
        (
            "anthropic",
            msg([{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "a"}]),
            "a",
        ),
        ("anthropic", messages_reply("hi"), "hi"),
    ],
    ids=[
        "null content",
        "no usage",
        "a model name past any",
        "json as text/plain",
        "no blocks",
        "other blocks",
        "plain",
    ],
)
def test_a_reply_of_the_documented_shape_with_optional_parts_missing_is_a_completion(
    kind: str, reply: Reply, text: str
) -> None:
    with loopback(reply) as server:
        completion = provider_for(kind, server).complete(ask())

    assert completion.text == text
    assert 0 < len(completion.model) <= 200  # the configured one when the reply names none


def test_a_tool_call_with_arguments_that_are_no_object_is_answered_not_a_crash() -> None:
    reply = chat(
        {
            "content": None,
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "read", "arguments": "[1"}},
                {"id": "b", "type": "custom", "custom": {"name": "x"}},
            ],
        }
    )
    with loopback(reply) as server:
        completion = provider_for("openai", server).complete(ask())

    bad, custom = completion.tool_calls
    assert (bad.name, bad.arguments) == ("read", {})
    assert "not a JSON object" in bad.error
    assert custom.error == "not a function call"


def test_an_html_200_is_recorded_then_the_chain_falls_back_and_the_proxy_cools_down() -> None:
    backup = OkProvider()
    with loopback(raw_reply(HTML, "text/html")) as server:
        router = Router(
            {"proxy": provider_for("openai", server), "backup": backup},
            {"mid": ["proxy", "backup"]},
            policies={"proxy": GuardPolicy(failure_threshold=1, cooldown_s=600)},
        )
        records: list[CallRecord] = []
        first = router.complete("mid", ask(), record=records.append)
        second = router.complete("mid", ask(), record=records.append)
        sent = len(server.received)

    assert (first.provider, first.fallback, second.provider) == ("backup", True, "backup")
    assert sent == 1  # cooling down after one failure: the second call skipped it unasked
    failed = records[0]
    assert failed.provider == "proxy" and failed.response is None
    assert failed.error is not None
    assert "HTTP 200 text/html body is not JSON: '<html><head><title>502" in failed.error
    assert [r.provider for r in records] == ["proxy", "backup", "backup"]
    assert router.guard("proxy").breaker.state == "open"


class OkProvider:
    name = "backup"
    in_house = True
    model = "ok"

    def complete(self, request: CompletionRequest) -> Any:
        from shipline.providers.base import Completion

        return Completion(text="ok", model="ok", input_tokens=1, output_tokens=1)


# --- seeded random fuzz ------------------------------------------------------------------------

STATUSES = [200] * 6 + [201, 204, 400, 401, 404, 408, 413, 422, 429, 500, 502, 503, 529]
TYPES = [
    "application/json",
    "text/html",
    "text/plain",
    "",
    "application/octet-stream",
    "text/event-stream",
    "application/json; charset=utf-8",
    "application/problem+json",
]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 4 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 7, 2**70, 1.5, float("nan")])
    if pick in (3, 4, 5):
        return rng.choice(["", "hi", "text", "function", "tool_use", "\x00", "é" * 3])
    if pick in (6, 7):
        keys = [
            "choices",
            "message",
            "content",
            "text",
            "type",
            "usage",
            "tool_calls",
            "function",
            "name",
            "arguments",
            "input",
            "id",
            "model",
            "error",
            "prompt_tokens",
            "input_tokens",
            "output_tokens",
        ]
        return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(3))]


def mutate(rng: random.Random, value: Any) -> Any:
    """`value` with one member somewhere replaced by random JSON."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        return {**value, key: mutate(rng, value[key])}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], mutate(rng, value[i]), *value[i + 1 :]]
    return random_json(rng)


def random_body(rng: random.Random, valid: dict[str, Any]) -> bytes:
    pick = rng.randrange(5)
    if pick == 0:
        return rng.randbytes(rng.randrange(200))
    text = json.dumps(valid if pick == 1 else mutate(rng, valid) if pick < 4 else random_json(rng))
    data = text.encode()
    if pick == 1:  # the valid body, cut or with a byte flipped
        i = rng.randrange(len(data))
        return (
            data[:i]
            if rng.random() < 0.5
            else data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
        )
    return data


def random_reply(rng: random.Random, valid: dict[str, Any]) -> Reply:
    body = random_body(rng, valid)
    declared = len(body) + rng.randrange(1, 50) if rng.random() < 0.1 else None
    return raw_reply(body, rng.choice(TYPES), status=rng.choice(STATUSES), declared_length=declared)


FUZZ_SECONDS = 3.0


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_seeded_random_replies_never_raise_anything_but_a_provider_error(kind: str) -> None:
    seed = 20260 + (kind == "anthropic")
    rng = random.Random(seed)
    valid = chat_reply("fine").body if kind == "openai" else messages_reply("fine").body
    current: list[Reply] = [Reply()]
    outcomes: dict[str, int] = {}
    with loopback(lambda _request: current[0]) as server:
        provider = provider_for(kind, server, timeout_s=1.0)
        deadline = time.monotonic() + FUZZ_SECONDS
        tries = 0
        while time.monotonic() < deadline:
            current[0] = random_reply(rng, valid)
            tries += 1
            try:
                completion = provider.complete(ask())
            except ProviderError as exc:
                outcomes["error"] = outcomes.get("error", 0) + 1
                assert str(exc), f"seed {seed}, try {tries}: an error without a message"
            except Exception as exc:  # pragma: no cover - what this test exists to catch
                pytest.fail(
                    f"seed {seed}, try {tries}: {type(exc).__name__}: {exc} for "
                    f"{current[0].status} {current[0].content_type!r} {current[0].raw!r:.300}"
                )
            else:
                assert isinstance(completion.text, str)
                outcomes["completion"] = outcomes.get("completion", 0) + 1
    assert tries >= 30, tries
    assert outcomes.get("error", 0) > tries // 2  # mostly garbage, and refused as such


@pytest.mark.parametrize("read", [read_chat_completion, read_message], ids=["chat", "message"])
def test_random_json_is_read_as_a_reply_or_a_shape_error_and_nothing_else(
    read: Callable[[Any], Any],
) -> None:
    rng = random.Random(7)
    valid = chat_reply("fine").body if read is read_chat_completion else messages_reply("x").body
    for _ in range(5000):
        value = mutate(rng, valid) if rng.random() < 0.7 else random_json(rng)
        try:
            read(value)
        except ShapeError as exc:
            assert str(exc).startswith("$"), str(exc)


# --- end to end: the real CLI ------------------------------------------------------------------

PROXY = """\
[providers.proxy]
kind = "openai"
model = "gpt-4o-mini"
base_url = "{url}"
max_retries = 0
failure_threshold = 1000

[providers.script]
kind = "scripted"
script = "script.yaml"

[tiers]
top = ["proxy", "script"]
mid = ["proxy", "script"]
cheap = ["proxy", "script"]
local = ["proxy", "script"]
"""


@pytest.fixture
def html_proxy() -> Iterator[LoopbackServer]:
    with loopback(raw_reply(HTML, "text/html")) as server:
        yield server


def test_a_ticket_whose_first_provider_answers_html_200_falls_back_and_is_done(
    tmp_path: Path, html_proxy: LoopbackServer
) -> None:
    project: Project = make_project(tmp_path / "repo", None)
    (project.root / "shipline.toml").write_text(PROXY.format(url=html_proxy.url), encoding="utf-8")
    hotfix = demo_ticket("hotfix")
    ticket_id = project.add("hotfix", hotfix["title"], hotfix["body"])

    project.cli("run")
    detail = project.show(ticket_id)

    assert detail["status"] == "done"
    assert all(p["status"] == "passed" for p in detail["phases"])  # none left running
    failed = [c for c in detail["calls"] if c["error"] is not None]
    assert failed and len(failed) == len(html_proxy.received)
    assert not any(c["estimated"] for c in detail["calls"])  # every call settled, failed or not
    assert {c["provider"] for c in failed} == {"proxy"}
    assert all(
        "HTTP 200 text/html body is not JSON: '<html><head><title>502 Bad Gateway" in c["error"]
        for c in failed
    )
    assert all(
        c["provider"] == "script" and c["fallback"] for c in detail["calls"] if not c["error"]
    )
    report = json.loads(project.cli("cost", "--by", "provider", "--json").stdout)
    proxy = next(g for g in report["groups"] if g["key"] == "proxy")
    assert (proxy["calls"], proxy["errors"]) == (len(failed), len(failed))
