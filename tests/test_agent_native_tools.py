"""The built-in agent loop with native tool calls, against real HTTP servers on loopback.

The official `openai` and `anthropic` clients talk to a stdlib server (tests/loopback.py) that
answers scripted tool calls; the loop runs them in a real git worktree. Providers without tool
support (the scripted one, or `native_tools = false`) go through the text protocol.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import Recording, scripted_provider
from loopback import chat_reply, chat_tool_reply, error_reply, loopback, messages_reply
from shipline.config import ProviderSettings
from shipline.providers.anthropic_provider import AnthropicProvider
from shipline.providers.base import Completion, CompletionRequest, Message, ToolCall, as_text
from shipline.providers.openai_compat import OpenAICompatProvider
from shipline.providers.router import Router
from shipline.sessions import (
    AgentSession,
    SessionLimits,
    SubmitAction,
    WorktreeTools,
    parse_text_action,
    resume,
    run_session,
)
from shipline.sessions.agent import (
    AGENT_TOOLS,
    NOT_RUN_INTERRUPTED,
    ONE_CALL_PER_TURN,
    TRANSCRIPT_VERSION,
)

ENV = {"SHIPLINE_TEST_KEY": "test-key-123"}
NOTES = {"path": "notes.md", "content": "hello\n"}
TOOL_NAMES = [spec["name"] for spec in AGENT_TOOLS]


def openai(url: str, **overrides: object) -> OpenAICompatProvider:
    settings = ProviderSettings.model_validate(
        {"kind": "openai", "model": "m", "base_url": url, "api_key_env": "SHIPLINE_TEST_KEY"}
        | overrides
    )
    return OpenAICompatProvider("oa", settings, environ=ENV)


def anthropic(url: str) -> AnthropicProvider:
    settings = ProviderSettings.model_validate(
        {"kind": "anthropic", "model": "m", "base_url": url, "api_key_env": "SHIPLINE_TEST_KEY"}
    )
    return AnthropicProvider("an", settings, environ=ENV)


scripted = scripted_provider


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    return root


@pytest.fixture
def tools(repo: Path) -> WorktreeTools:
    return WorktreeTools(repo, command_timeout_s=30)


def test_openai_tool_calls_write_a_file_then_submit(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    transcript = tmp_path / "t.json"
    with loopback(
        chat_tool_reply(("call_1", "write_file", NOTES), text="Writing the notes."),
        chat_tool_reply(("call_2", "submit", {"summary": "wrote notes.md"})),
    ) as server:
        result = run_session(openai(server.url), tools, "Write notes.", transcript)

    assert (result.exit_reason, result.final_text, result.steps) == (
        "submitted",
        "wrote notes.md",
        2,
    )
    assert (repo / "notes.md").read_text() == "hello\n"
    assert [(r["name"], r["exit_code"]) for r in result.tool_records] == [("write_file", 0)]
    assert result.usage == {"input_tokens": 14, "output_tokens": 6}
    first, second = server.received
    assert [t["type"] for t in first["tools"]] == ["function"] * len(AGENT_TOOLS)
    assert [t["function"]["name"] for t in first["tools"]] == TOOL_NAMES
    assert first["tools"][1]["function"]["parameters"]["required"] == ["path", "content"]
    call, answer = second["messages"][-2:]
    assert call == {
        "role": "assistant",
        "content": "Writing the notes.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "write_file", "arguments": json.dumps(NOTES)},
            }
        ],
    }
    assert answer["role"] == "tool" and answer["tool_call_id"] == "call_1"
    assert answer["content"].startswith("[write_file exit 0]")
    # the transcript keeps the native turns, and the submit call got its result too
    saved = json.loads(transcript.read_text())
    assert saved["version"] == TRANSCRIPT_VERSION
    assert saved["messages"][2]["tool_calls"] == [
        {"id": "call_1", "name": "write_file", "arguments": NOTES, "error": ""}
    ]
    assert saved["messages"][3]["tool_call_id"] == "call_1"
    assert saved["messages"][-1] == {
        "role": "user",
        "content": "Submitted.",
        "tool_call_id": "call_2",
    }


def test_anthropic_tool_use_write_a_file_then_submit(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    with loopback(
        messages_reply("Writing.", ("toolu_1", "write_file", NOTES)),
        messages_reply("", ("toolu_2", "submit", {"summary": "done"})),
    ) as server:
        result = run_session(
            anthropic(server.anthropic_url), tools, "Write notes.", tmp_path / "t.json"
        )

    assert (result.exit_reason, result.final_text, result.steps) == ("submitted", "done", 2)
    assert (repo / "notes.md").read_text() == "hello\n"
    assert [r["name"] for r in result.tool_records] == ["write_file"]
    first, second = server.received
    assert [t["name"] for t in first["tools"]] == TOOL_NAMES
    assert first["tools"][0]["input_schema"]["required"] == ["path"]
    assert "one tool per turn" in first["system"]
    assert first["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Write notes."}]}
    ]
    call, answer = second["messages"][-2:]
    assert call == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Writing."},
            {"type": "tool_use", "id": "toolu_1", "name": "write_file", "input": NOTES},
        ],
    }
    assert answer["role"] == "user" and len(answer["content"]) == 1
    assert answer["content"][0]["type"] == "tool_result"
    assert answer["content"][0]["tool_use_id"] == "toolu_1"
    assert answer["content"][0]["content"].startswith("[write_file exit 0]")


def test_several_calls_in_one_turn_run_the_first_and_answer_the_rest(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    with loopback(
        chat_tool_reply(
            ("c1", "write_file", {"path": "a.md", "content": "a"}),
            ("c2", "write_file", {"path": "b.md", "content": "b"}),
        ),
        chat_tool_reply(("c3", "write_file", "{not json")),
        chat_tool_reply(("c4", "submit", {"summary": "a only"})),
    ) as server:
        result = run_session(openai(server.url), tools, "Write.", tmp_path / "t.json")

    assert (result.exit_reason, result.steps) == ("submitted", 3)
    assert (repo / "a.md").exists() and not (repo / "b.md").exists()
    assert [r["name"] for r in result.tool_records] == ["write_file"]  # nothing ran for c2, c3
    answers = [m for m in server.received[1]["messages"] if m["role"] == "tool"]
    assert [a["tool_call_id"] for a in answers] == ["c1", "c2"]
    assert answers[1]["content"] == ONE_CALL_PER_TURN
    bad = server.received[2]["messages"][-1]
    assert bad["tool_call_id"] == "c3"
    assert bad["content"].startswith("error: the arguments of write_file are not a JSON object")


def test_a_server_that_refuses_tools_is_asked_by_the_text_protocol(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    write = json.dumps({"name": "write_file", "args": NOTES})
    with loopback(
        error_reply(400, "tools are not supported by this model"),
        chat_reply(f"```tool\n{write}\n```"),
        chat_reply("```submit\nwrote it\n```"),
    ) as server:
        result = run_session(openai(server.url), tools, "Write notes.", tmp_path / "t.json")

    assert (result.exit_reason, result.final_text, result.steps) == ("submitted", "wrote it", 2)
    assert (repo / "notes.md").read_text() == "hello\n"
    assert ["tools" in body for body in server.received] == [True, False, False]
    assert server.received[1]["messages"] == server.received[0]["messages"]


def test_native_tools_off_sends_no_tools_and_replays_calls_as_text(
    tmp_path: Path, tools: WorktreeTools
) -> None:
    history = (
        Message("user", "Write notes."),
        Message("assistant", "Writing.", (ToolCall("c1", "write_file", NOTES),)),
        Message("user", "[write_file exit 0]\nwrote notes.md", tool_call_id="c1"),
    )
    request = CompletionRequest(history, "implement", "producer", 1, tools=AGENT_TOOLS)
    with loopback(chat_reply("ok")) as server:
        openai(server.url, native_tools=False).complete(request)

    (body,) = server.received
    assert "tools" not in body
    block = json.dumps({"name": "write_file", "args": NOTES})
    assert body["messages"] == [
        {"role": "user", "content": "Write notes."},
        {"role": "assistant", "content": f"Writing.\n```tool\n{block}\n```"},
        {"role": "user", "content": "[write_file exit 0]\nwrote notes.md"},
    ]
    assert [m.content for m in as_text(history)] == [m["content"] for m in body["messages"]]


def test_scripted_provider_ignores_the_tools_and_uses_the_text_protocol(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    write = json.dumps({"name": "write_file", "args": NOTES})
    provider = Recording(
        scripted(
            tmp_path,
            [
                {"phase": "implement", "step": 1, "reply": f"```tool\n{write}\n```"},
                {"phase": "implement", "step": 2, "reply": "```submit\ndone\n```"},
            ],
        )
    )
    result = run_session(provider, tools, "Write notes.", tmp_path / "t.json")

    assert (result.exit_reason, result.steps) == ("submitted", 2)
    assert (repo / "notes.md").read_text() == "hello\n"
    assert all(r.tools == AGENT_TOOLS for r in provider.requests)  # offered, and ignored


def test_a_text_tool_block_calling_submit_submits() -> None:
    """A text model imitating a native submit call in its history (shown as a tool block)."""
    block = json.dumps({"name": "submit", "args": {"summary": "all done "}})
    completion = Completion(
        text=f"```tool\n{block}\n```", model="m", input_tokens=0, output_tokens=0
    )
    assert parse_text_action(completion) == SubmitAction("all done")


def test_resumed_native_session_replays_its_tool_calls_on_another_api(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    """An OpenAI session's transcript resumes on Anthropic: the calls change shape, not sense."""
    transcript = tmp_path / "t.json"
    with loopback(chat_tool_reply(("call_1", "write_file", NOTES))) as first:
        stopped = run_session(
            openai(first.url), tools, "Write notes.", transcript, limits=SessionLimits(max_steps=1)
        )
    assert stopped.exit_reason == "limits: step limit 1 reached"

    with loopback(messages_reply("", ("toolu_9", "submit", {"summary": "resumed"}))) as second:
        result = resume(transcript, anthropic(second.anthropic_url), tools, message="Go on.")

    assert (result.exit_reason, result.final_text, result.steps) == ("submitted", "resumed", 2)
    assert result.session_id == stopped.session_id
    (body,) = second.received
    call, answer = body["messages"][-2:]
    assert call["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "write_file", "input": NOTES}
    ]
    # the tool result and the resume note share the one user turn after the call
    assert [block["type"] for block in answer["content"]] == ["tool_result", "text"]
    assert answer["content"][0]["tool_use_id"] == "call_1"
    assert answer["content"][1]["text"] == "Go on."


def test_resume_answers_a_call_left_without_result(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    """A session stopped inside a tool call: the call is answered before the history goes out."""
    transcript = tmp_path / "t.json"
    session = AgentSession(scripted(tmp_path, []), tools, transcript)
    session.messages = [
        Message("system", "s"),
        Message("user", "Write notes."),
        Message("assistant", "", (ToolCall("c1", "run_command", {"command": "sleep 99"}),)),
    ]
    session.save()
    with loopback(chat_tool_reply(("c2", "submit", {"summary": "ok"}))) as server:
        result = resume(transcript, openai(server.url), tools, message="Go on.")

    assert result.exit_reason == "submitted"
    (body,) = server.received
    assert body["messages"][-2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": NOT_RUN_INTERRUPTED},
        {"role": "user", "content": "Go on."},
    ]


def test_router_falls_back_mid_session_from_native_calls_to_the_text_protocol(
    tmp_path: Path, repo: Path, tools: WorktreeTools
) -> None:
    """Each call's answering provider decides: a native turn, then a scripted (text) one."""
    backup = Recording(
        scripted(tmp_path, [{"phase": "implement", "step": 2, "reply": "```submit\nok\n```"}])
    )
    with loopback(
        chat_tool_reply(("call_1", "write_file", NOTES)), error_reply(503, "overloaded")
    ) as server:
        router = Router({"oa": openai(server.url), "backup": backup}, {"t": ["oa", "backup"]})
        provider = router.bind("t")
        result = run_session(provider, tools, "Write notes.", tmp_path / "t.json")

    assert (result.exit_reason, result.steps) == ("submitted", 2)
    assert (repo / "notes.md").read_text() == "hello\n"
    assert ["tools" in body for body in server.received] == [True, True]
    # the scripted backup got the native history, and reads it as text
    (request,) = backup.requests
    assert [m.tool_call_id for m in request.messages[-2:]] == ["", "call_1"]
    assert "```tool" in as_text(request.messages)[-2].content
