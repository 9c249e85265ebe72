"""The built-in agent loop on the real scripted provider and a real temp git repo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import Recording, scripted_provider
from shipline.errors import ShiplineError
from shipline.providers.base import Completion, CompletionRequest
from shipline.providers.scripted import ScriptedProvider
from shipline.sessions import (
    AgentSession,
    FormatError,
    SessionLimits,
    SubmitAction,
    ToolAction,
    TranscriptError,
    WorktreeTools,
    parse_text_action,
    resume,
    run_session,
)


def tool(name: str, **args: Any) -> str:
    return f"I will call {name}.\n```tool\n{json.dumps({'name': name, 'args': args})}\n```\n"


def submit(summary: str) -> str:
    return f"Done.\n```submit\n{summary}\n```\n"


def scripted(
    tmp_path: Path, replies: list[str], fallback: str | None = None, first: int = 1
) -> ScriptedProvider:
    """One rule per step (step N, from `first`), then an optional catch-all."""
    rules: list[dict[str, Any]] = [
        {"phase": "implement", "role": "producer", "step": n, "reply": reply}
        for n, reply in enumerate(replies, first)
    ]
    if fallback is not None:
        rules.append({"phase": "*", "reply": fallback})
    return scripted_provider(tmp_path, rules)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "calc.py").write_text("def add(a, b):\n    return a - b\n")
    (root / "test_calc.py").write_text(
        "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=root, check=True)
    return root


@pytest.fixture
def tools(repo: Path) -> WorktreeTools:
    return WorktreeTools(repo, command_timeout_s=30)


def test_reads_edits_runs_tests_and_submits(tmp_path: Path, repo: Path, tools: WorktreeTools):
    provider = Recording(
        scripted(
            tmp_path,
            [
                tool("read_file", path="calc.py"),
                tool("edit", path="calc.py", search="a - b", replace="a + b"),
                tool("run_command", command=f"{sys.executable} -m pytest -q -p no:cacheprovider"),
                submit("add() adds now; tests pass."),
            ],
        )
    )
    transcript = tmp_path / "session.json"
    result = run_session(provider, tools, "Fix add().", transcript)

    assert result.exit_reason == "submitted"
    assert result.final_text == "add() adds now; tests pass."
    assert result.steps == 4
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return a + b\n"
    assert [r["name"] for r in result.tool_records] == ["read_file", "edit", "run_command"]
    assert [r["exit_code"] for r in result.tool_records] == [0, 0, 0]
    assert result.usage["input_tokens"] > 0 and result.usage["output_tokens"] > 0
    assert result.cost == 0.0
    # the phase, role and step number reach the provider; each step sees the last observation
    assert [r.step for r in provider.requests] == [1, 2, 3, 4]
    assert {(r.phase, r.role) for r in provider.requests} == {("implement", "producer")}
    assert "return a - b" in provider.requests[1].messages[-1].content
    assert "1 passed" in provider.requests[3].messages[-1].content
    saved = json.loads(transcript.read_text())
    assert saved["exit_reason"] == "submitted" and saved["session_id"] == result.session_id
    assert saved["tool_records"] == result.tool_records


def test_malformed_reply_is_a_format_error_and_the_next_step_recovers(
    tmp_path: Path, repo: Path, tools: WorktreeTools
):
    provider = Recording(
        scripted(
            tmp_path,
            [
                "I think I should read the file first.",  # no block
                tool("list_dir") + tool("read_file", path="calc.py"),  # two blocks
                "```tool\n{not json}\n```\n",
                tool("read_file", path="calc.py"),
                submit("looked"),
            ],
        )
    )
    result = run_session(provider, tools, "Look around.", tmp_path / "t.json")

    assert result.exit_reason == "submitted"
    assert result.steps == 5  # format errors count as steps
    assert [r["name"] for r in result.tool_records] == ["read_file"]  # nothing ran for them
    sent = [r.messages[-1].content for r in provider.requests[1:4]]
    assert "held 0 action blocks" in sent[0]
    assert "held 2 action blocks" in sent[1]
    assert "not valid JSON" in sent[2]


def test_step_limit_ends_the_session(tmp_path: Path, tools: WorktreeTools):
    provider = scripted(tmp_path, [], fallback=tool("list_dir"))
    result = run_session(
        provider, tools, "Loop.", tmp_path / "t.json", limits=SessionLimits(max_steps=3)
    )
    assert result.exit_reason == "limits: step limit 3 reached"
    assert result.steps == 3
    assert len(result.tool_records) == 3


def test_token_limit_ends_the_session(tmp_path: Path, tools: WorktreeTools):
    provider = scripted(tmp_path, [], fallback=tool("list_dir"))
    limits = SessionLimits(max_steps=None, max_tokens=1)
    result = run_session(provider, tools, "Loop.", tmp_path / "t.json", limits=limits)
    assert result.exit_reason.startswith("limits: token limit 1 reached")
    assert result.steps == 1


def test_cost_and_wall_time_limits_end_the_session(tmp_path: Path, tools: WorktreeTools):
    scripted(tmp_path, [], fallback=tool("list_dir"))
    priced = ScriptedProvider.from_file("s", tmp_path / "script.yaml", prices=(1e6, 0.0))
    limits = SessionLimits(max_cost_usd=0.5)
    result = run_session(priced, tools, "Loop.", tmp_path / "t.json", limits=limits)
    assert result.exit_reason.startswith("limits: cost limit $0.5 reached")
    assert result.steps == 1 and result.cost is not None and result.cost >= 1

    limits = SessionLimits(max_wall_s=1e-9)
    result = run_session(priced, tools, "Loop.", tmp_path / "t.json", limits=limits)
    assert (result.exit_reason, result.steps) == ("limits: wall-time limit 1e-09 s reached", 0)


def test_path_outside_the_worktree_is_refused_and_observed(
    tmp_path: Path, repo: Path, tools: WorktreeTools
):
    (tmp_path / "secret.txt").write_text("top secret")
    provider = Recording(
        scripted(
            tmp_path,
            [
                tool("read_file", path="../secret.txt"),
                tool("write_file", path=str(tmp_path / "evil.txt"), content="x"),
                submit("could not"),
            ],
        )
    )
    result = run_session(provider, tools, "Read the secret.", tmp_path / "t.json")

    assert result.exit_reason == "submitted"
    assert [r["exit_code"] for r in result.tool_records] == [126, 126]
    observations = [r.messages[-1].content for r in provider.requests[1:]]
    assert all(
        o.startswith(("[read_file exit 126]", "[write_file exit 126]")) for o in observations
    )
    assert all("refused" in o and "top secret" not in o for o in observations)
    assert not (tmp_path / "evil.txt").exists()


def test_transcript_saved_after_every_step_and_resume_carries_history(
    tmp_path: Path, repo: Path, tools: WorktreeTools
):
    transcript = tmp_path / "sessions" / "s.json"
    seen: list[int] = []

    class Watching(Recording):
        def complete(self, request: CompletionRequest) -> Completion:
            if request.step > 1:  # the previous step is on disk before the next query
                seen.append(json.loads(transcript.read_text())["steps"])
            return super().complete(request)

    first = Watching(
        scripted(
            tmp_path,
            [tool("read_file", path="calc.py"), tool("grep", pattern="def add")],
        )
    )
    stopped = run_session(first, tools, "Fix add().", transcript, limits=SessionLimits(max_steps=2))
    assert stopped.exit_reason.startswith("limits")
    assert seen == [1]
    saved = json.loads(transcript.read_text())
    assert saved["steps"] == 2 and len(saved["tool_records"]) == 2

    # a fresh provider and tools, as after a restart: the history comes from the transcript
    second = Recording(
        scripted(
            tmp_path,
            [tool("edit", path="calc.py", search="a - b", replace="a + b"), submit("fixed")],
            first=3,
        )
    )
    result = resume(transcript, second, WorktreeTools(repo), message="Go on.")

    assert result.exit_reason == "submitted"
    assert result.session_id == stopped.session_id
    assert result.steps == 4  # the step count (and so `step`) carries on
    assert [r.step for r in second.requests] == [3, 4]
    history = [m.content for m in second.requests[0].messages]
    assert history[1] == "Fix add()."
    assert any("return a - b" in m for m in history)  # the earlier read_file observation
    assert any(m.startswith("[grep exit 0]") for m in history)
    assert history[-1] == "Go on."
    assert [r["name"] for r in result.tool_records] == ["read_file", "grep", "edit"]
    assert result.usage["input_tokens"] > stopped.usage["input_tokens"]
    assert "a + b" in (repo / "calc.py").read_text()
    assert json.loads(transcript.read_text())["exit_reason"] == "submitted"


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "No such file"),
        ("{not json", "not valid JSON"),
        (json.dumps({"version": 99, "messages": []}), "transcript version 99"),
        (json.dumps({"version": 1, "phase": "implement"}), "the transcript is damaged"),
    ],
)
def test_resuming_a_missing_foreign_or_damaged_transcript_is_an_error_naming_the_file(
    tmp_path: Path, tools: WorktreeTools, content: str | None, said: str
) -> None:
    transcript = tmp_path / "t.json"
    if content is not None:
        transcript.write_text(content)
    provider = Recording(scripted(tmp_path, [submit("never asked")]))

    with pytest.raises(TranscriptError) as raised:
        resume(transcript, provider, tools)

    message = str(raised.value)
    assert isinstance(raised.value, ShiplineError)
    assert message.startswith(f"cannot resume the session saved at {transcript}: ")
    assert said in message
    assert provider.requests == []
    if content is not None:
        assert "delete it to start the session afresh" in message


def test_transcript_is_saved_when_the_provider_fails(tmp_path: Path, tools: WorktreeTools):
    path = tmp_path / "script.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"phase": "plan", "reply": "x"}]}))
    transcript = tmp_path / "t.json"
    result = run_session(ScriptedProvider.from_file("s", path), tools, "Go.", transcript)
    assert result.exit_reason.startswith("error: scripted provider 's' has no rule")
    assert json.loads(transcript.read_text())["exit_reason"] == result.exit_reason


def test_parser_is_pluggable(tmp_path: Path, tools: WorktreeTools):
    """The parser of replies without native tool calls (the text protocol's) can be replaced."""

    def native(completion: Completion) -> ToolAction | SubmitAction:
        if completion.text == "done":
            return SubmitAction("native done")
        raise FormatError("no tool call")

    provider = scripted(tmp_path, ["nothing", "done"])
    session = AgentSession(provider, tools, tmp_path / "t.json", parser=native)
    result = session.run("Go.")
    assert (result.exit_reason, result.final_text, result.steps) == ("submitted", "native done", 2)
    assert session.messages[-2].content == "no tool call"


def test_parse_text_action() -> None:
    def parse(text: str) -> ToolAction | SubmitAction:
        return parse_text_action(Completion(text=text, model="m", input_tokens=0, output_tokens=0))

    content = "x = 1\n```python\ncode\n```\n"
    assert parse(tool("write_file", path="a.md", content=content)) == ToolAction(
        "write_file", {"path": "a.md", "content": content}
    )
    assert parse("```submit\nall done\n```") == SubmitAction("all done")
    assert parse('```tool\n{"name": "list_dir"}\n```') == ToolAction("list_dir", {})
    with pytest.raises(FormatError, match="needs"):
        parse('```tool\n{"name": 3}\n```')
    with pytest.raises(FormatError, match="held 2"):
        parse(submit("a") + submit("b"))
