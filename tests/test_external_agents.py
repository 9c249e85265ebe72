"""External coding agents as session runners.

codex, claude and gemini are the real CLIs from npm (`.ci/npm`, see NPM_INSTALL), pointed at
`ScriptedModel`: a real HTTP server on 127.0.0.1 that speaks the vendor's streaming API and
plays a tiny model: asked a task, it calls the CLI's own write tool (codex: a shell command) to
write `result.txt`; shown the tool's result, it answers with FINAL. Aider (a pip package with
heavy pins) is tested against its documented output, printed by `fixtures/agents/replay.py`,
which also replays recorded outputs of the three CLIs so their parsers are tested without npm,
and plays the broken agents: a missing one, a hanging one, one that prints garbage.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, get_args

import pytest

from shipline.config import AgentSettings
from shipline.errors import ConfigError, ShiplineError
from shipline.providers.pricing import table_price
from shipline.sessions import aider, claude, codex, gemini
from shipline.sessions.base import AgentCall, AgentReport, AgentUnavailable
from shipline.sessions.external import (
    AGENT_KINDS,
    ExternalAgent,
    agent_cost,
    agent_kind,
    vendor_of,
)

ROOT = Path(__file__).resolve().parents[1]
NPM_BIN = ROOT / ".ci" / "npm" / "node_modules" / ".bin"
NPM_INSTALL = (
    "npm install --prefix .ci/npm --no-audit --no-fund @openai/codex@0.169.0 "
    "@anthropic-ai/claude-code@2.1.330 @google/gemini-cli@0.61.0"
)
FIXTURES = Path(__file__).parent / "fixtures" / "agents"
REPLAY = shlex.join([sys.executable, str(FIXTURES / "replay.py")])
TASK = "Write hello into result.txt"
FINAL = "FINAL: result.txt holds hello"
SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
USAGE_IN, USAGE_OUT = 100, 20  # what the scripted model reports for each reply


def listed_usd(model: str, vendor: str, input_tokens: int, output_tokens: int) -> float:
    """The genai-prices list price (Gemini's API told by its URL, as the adapter does)."""
    url = "https://generativelanguage.googleapis.com" if vendor == "google" else ""
    price = table_price(
        model, kind=vendor, base_url=url, input_tokens=input_tokens, output_tokens=output_tokens
    )
    assert price is not None, f"{model} is not in the genai-prices table"
    return price.total_usd


GEMINI_PRO_LISTED = listed_usd("gemini-2.5-pro", "google", 21_950, 163)


def npm_cli(name: str) -> Path:
    path = NPM_BIN / name
    if not path.exists():
        pytest.skip(f"the {name} CLI is not installed: run `{NPM_INSTALL}`")
    return path


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    path = tmp_path / "wt"
    path.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], cwd=path, check=True)
    (path / "README.md").write_text("demo\n")
    subprocess.run([*git, "add", "."], cwd=path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], cwd=path, check=True)
    return path


def events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


# --- the scripted model, in three vendors' streaming APIs ---------------------------------------


Wire = Callable[[dict[str, Any], bool, str], bytes]
"""(request body, whether it carries the tool's result, a fresh call id) -> the SSE body."""


def _sse(items: list[dict[str, Any]], named: bool = True) -> bytes:
    chunks = []
    for item in items:
        head = f"event: {item['type']}\n" if named else ""
        chunks.append(f"{head}data: {json.dumps(item)}\n\n")
    return "".join(chunks).encode()


def openai_responses(body: dict[str, Any], answered: bool, call_id: str) -> bytes:
    if answered:
        item = {
            "type": "message",
            "role": "assistant",
            "id": f"msg_{call_id}",
            "content": [{"type": "output_text", "text": FINAL}],
        }
    else:
        command = "printf 'hello\\n' > result.txt"
        item = {
            "type": "function_call",
            "name": "exec_command",
            "call_id": call_id,
            "arguments": json.dumps({"cmd": command}),
        }
    usage = {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT, "total_tokens": 120}
    return _sse(
        [
            {"type": "response.created", "response": {"id": f"resp_{call_id}"}},
            {"type": "response.output_item.done", "item": item},
            {"type": "response.completed", "response": {"id": f"resp_{call_id}", "usage": usage}},
        ]
    )


def anthropic_messages(body: dict[str, Any], answered: bool, call_id: str) -> bytes:
    if answered:
        block: dict[str, Any] = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": FINAL}
        stop = "end_turn"
    else:
        block = {"type": "tool_use", "id": f"toolu_{call_id}", "name": "Write", "input": {}}
        args = {"file_path": "result.txt", "content": f"hello\n# OPENAI_API_KEY={SECRET}\n"}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(args)}
        stop = "tool_use"
    message = {
        "id": f"msg_{call_id}",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": body.get("model", "claude"),
        "stop_reason": None,
        "usage": {"input_tokens": USAGE_IN, "output_tokens": 1},
    }
    return _sse(
        [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": block},
            {"type": "content_block_delta", "index": 0, "delta": delta},
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop},
                "usage": {"output_tokens": USAGE_OUT},
            },
            {"type": "message_stop"},
        ]
    )


def gemini_generate(body: dict[str, Any], answered: bool, call_id: str) -> bytes:
    if answered:
        parts: list[dict[str, Any]] = [{"text": FINAL}]
    else:
        args = {"file_path": "result.txt", "content": "hello\n"}
        parts = [{"functionCall": {"name": "write_file", "args": args}}]
    chunk = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": USAGE_IN,
            "candidatesTokenCount": USAGE_OUT,
            "totalTokenCount": USAGE_IN + USAGE_OUT,
        },
    }
    return f"data: {json.dumps(chunk)}\r\n\r\n".encode()


def _answered(body: dict[str, Any]) -> bool:
    """Whether the newest input carries a tool's result (in any of the three APIs)."""
    newest: Any = (body.get("input") or body.get("messages") or body.get("contents") or [{}])[-1]
    text = json.dumps(newest)
    return any(key in text for key in ('"function_call_output"', '"tool_result"', "functionResp"))


class ScriptedModel:
    """A real HTTP server on 127.0.0.1 answering every POST with `wire`, the scripted model's
    next reply. `requests` holds each request's path and JSON body, in order."""

    def __init__(self, wire: Wire) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        ids = itertools.count(1)
        lock = threading.Lock()
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with lock:
                    model.requests.append((self.path, body))
                    call_id = str(next(ids))
                payload = wire(body, _answered(body), call_id)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ScriptedModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Wire], ScriptedModel]]:
    servers: list[ScriptedModel] = []

    def start(wire: Wire) -> ScriptedModel:
        server = ScriptedModel(wire).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


# --- the real CLIs --------------------------------------------------------------------------


def test_codex_edits_the_worktree_and_resumes_its_thread(
    tmp_path: Path, worktree: Path, scripted: Callable[[Wire], ScriptedModel]
) -> None:
    binary = npm_cli("codex")
    model = scripted(openai_responses)
    loopback = {  # a custom model provider: codex's config keys, as `-c key=TOML value`
        "model_provider": '"loopback"',
        "model_providers.loopback.name": '"loopback"',
        "model_providers.loopback.base_url": f'"{model.url}/v1"',
        "model_providers.loopback.env_key": '"LOOPBACK_API_KEY"',
        "model_providers.loopback.wire_api": '"responses"',
    }
    settings = AgentSettings(
        kind="codex",
        command=str(binary),
        model="gpt-4o-mini",
        args=[word for key, value in loopback.items() for word in ("-c", f"{key}={value}")],
        env={"CODEX_HOME": str(tmp_path / "codex-home"), "LOOPBACK_API_KEY": "dummy"},
    )
    (tmp_path / "codex-home").mkdir()
    agent = ExternalAgent("codex", settings)
    log = tmp_path / "codex.log"

    result = agent.run(TASK, worktree, timeout_s=60, log_path=log)

    assert result.exit_reason == "submitted", log.read_text()
    thread = next(e["thread_id"] for e in events(log) if e["type"] == "thread.started")
    assert result.session_id == thread and UUID.match(thread)
    assert result.final_text == FINAL
    assert (worktree / "result.txt").read_text() == "hello\n"
    assert result.usage == {"input_tokens": 2 * USAGE_IN, "output_tokens": 2 * USAGE_OUT}
    listed = listed_usd("gpt-4o-mini", "openai", 200, 40)
    assert result.cost == pytest.approx(listed)  # codex reports tokens only: the table prices
    assert result.steps == 1
    [record] = result.tool_records
    assert record["name"] == "command" and record["exit_code"] == 0
    assert "result.txt" in record["args"]["command"]
    assert model.requests[0][0] == "/v1/responses"

    (worktree / "result.txt").unlink()
    resumed = agent.run("Write it again", worktree, resume_session_id=thread, timeout_s=60)

    assert resumed.exit_reason == "submitted"
    assert resumed.session_id == thread
    assert (worktree / "result.txt").read_text() == "hello\n"
    assert TASK in json.dumps(model.requests[-1][1]["input"])  # the thread's history came along
    # codex reports the thread's running total: the resumed run's usage includes the first run
    assert resumed.usage == {"input_tokens": 4 * USAGE_IN, "output_tokens": 4 * USAGE_OUT}


def test_claude_edits_the_worktree_reports_its_cost_and_resumes(
    tmp_path: Path, worktree: Path, scripted: Callable[[Wire], ScriptedModel]
) -> None:
    binary = npm_cli("claude")
    model = scripted(anthropic_messages)
    home = tmp_path / "home"
    home.mkdir()
    settings = AgentSettings(
        kind="claude",
        command=str(binary),
        model="claude-sonnet-4-5",
        env={
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "ANTHROPIC_BASE_URL": model.url,
            "ANTHROPIC_API_KEY": "sk-ant-dummy-key-for-loopback",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        },
    )
    agent = ExternalAgent("claude", settings)
    log = tmp_path / "claude.log"

    result = agent.run(TASK, worktree, timeout_s=60, log_path=log)

    assert result.exit_reason == "submitted", log.read_text()
    outcome = next(e for e in events(log) if e["type"] == "result")
    assert UUID.match(result.session_id) and result.session_id == outcome["session_id"]
    assert result.final_text == FINAL
    assert (worktree / "result.txt").read_text().startswith("hello\n")
    assert result.usage == {"input_tokens": 2 * USAGE_IN, "output_tokens": 2 * USAGE_OUT}
    assert result.cost == outcome["total_cost_usd"] and result.cost is not None  # its own figure
    assert result.steps == outcome["num_turns"]
    [record] = result.tool_records
    assert record["name"] == "Write" and record["exit_code"] == 0
    assert SECRET not in json.dumps(record) and "OPENAI_API_KEY=***" in record["args"]["content"]
    assert SECRET not in log.read_text()  # the log is redacted too

    resumed = agent.run("Write it again", worktree, resume_session_id=result.session_id)

    assert resumed.exit_reason == "submitted"
    assert resumed.session_id == result.session_id
    assert TASK in json.dumps(model.requests[-1][1]["messages"])
    assert resumed.usage == {"input_tokens": 2 * USAGE_IN, "output_tokens": 2 * USAGE_OUT}


def test_gemini_edits_the_worktree_and_resumes_by_session_id(
    tmp_path: Path, worktree: Path, scripted: Callable[[Wire], ScriptedModel]
) -> None:
    binary = npm_cli("gemini")
    model = scripted(gemini_generate)
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    # an API key login; GOOGLE_GEMINI_BASE_URL then sends its requests to the loopback server
    auth = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(auth))
    settings = AgentSettings(
        kind="gemini",
        command=str(binary),
        model="gemini-2.5-flash",
        env={
            "HOME": str(home),
            "GOOGLE_GEMINI_BASE_URL": model.url,
            "GEMINI_API_KEY": "dummy",
            "GEMINI_CLI_NO_RELAUNCH": "true",  # one node process, not two: a second faster
        },
    )
    agent = ExternalAgent("gemini", settings)
    log = tmp_path / "gemini.log"

    result = agent.run(TASK, worktree, timeout_s=60, log_path=log)

    assert result.exit_reason == "submitted", log.read_text()
    init = next(e for e in events(log) if e["type"] == "init")
    assert UUID.match(result.session_id) and result.session_id == init["session_id"]
    assert result.final_text == FINAL
    assert (worktree / "result.txt").read_text() == "hello\n"
    assert result.usage == {"input_tokens": 2 * USAGE_IN, "output_tokens": 2 * USAGE_OUT}
    assert result.cost == pytest.approx(listed_usd("gemini-2.5-flash", "google", 200, 40))
    [record] = result.tool_records
    assert record == {
        "name": "write_file",
        "args": {"file_path": "result.txt", "content": "hello\n"},
        "result_size": record["result_size"],
        "exit_code": 0,
    }
    assert model.requests[0][0].startswith("/v1beta/models/gemini-2.5-flash:streamGenerate")

    resumed = agent.run("Write it again", worktree, resume_session_id=result.session_id)

    assert resumed.exit_reason == "submitted"
    assert resumed.session_id == result.session_id
    assert TASK in json.dumps(model.requests[-1][1]["contents"])
    assert resumed.usage == {"input_tokens": 2 * USAGE_IN, "output_tokens": 2 * USAGE_OUT}


# --- recorded and documented outputs, through the subprocess path ----------------------------


def replay(kind: str, sample: str, **env: str) -> ExternalAgent:
    """An agent of `kind` whose executable is replay.py printing `sample`."""
    env = {"REPLAY_OUTPUT": str(FIXTURES / sample), **env}
    return ExternalAgent(kind, AgentSettings(kind=kind, command=REPLAY, env=env))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "sample", "session_id", "final", "usage", "cost", "steps", "tools"),
    [
        ("codex", "codex.jsonl", "019a2a8b-65c4-7ad2-b5e4-2d4be6a3c0f1", "Done: greet() added.",
         {"input_tokens": 24763, "output_tokens": 1022}, None, 3,
         ["command", "file_change", "command"]),
        ("claude", "claude.jsonl", "8f1d4e2a-3b7c-4c1e-9a5d-6e2f0b7c9d13", "Added greet().",
         {"input_tokens": 40_811, "output_tokens": 436}, 0.0421, 3, ["Read", "Edit"]),
        ("gemini", "gemini.jsonl", "2c9e5a7b-1f3d-4e8a-b6c2-7d9f0e1a3b54", "Added `greet()`.",
         {"input_tokens": 21_950, "output_tokens": 163}, GEMINI_PRO_LISTED, 2,
         ["read_file", "replace"]),
    ],
)  # fmt: skip
def test_recorded_output_is_normalised(
    worktree: Path,
    kind: str,
    sample: str,
    session_id: str,
    final: str,
    usage: dict[str, int],
    cost: float | None,
    steps: int,
    tools: list[str],
) -> None:
    result = replay(kind, sample).run(TASK, worktree, timeout_s=30)

    assert result.exit_reason == "submitted"
    assert result.session_id == session_id
    assert result.final_text == final
    assert result.usage == usage
    assert result.cost == pytest.approx(cost)  # claude's own; gemini's model from the table
    assert result.steps == steps
    assert [r["name"] for r in result.tool_records] == tools


def test_aider_documented_output_and_chat_history(tmp_path: Path, worktree: Path) -> None:
    argv_file = tmp_path / "argv.json"
    agent = replay(
        "aider",
        "aider-output.txt",
        REPLAY_HISTORY=str(FIXTURES / "aider-chat-history.md"),
        REPLAY_ARGV=str(argv_file),
    )

    result = agent.run(TASK, worktree, timeout_s=30)

    assert result.exit_reason == "submitted"
    assert UUID.match(result.session_id)  # aider has none: ours, naming its chat history
    assert result.final_text.startswith("I added `greet()` to hello.py")
    assert "#### " not in result.final_text and "> Tokens" not in result.final_text
    assert result.usage == {"input_tokens": 2300 + 3100, "output_tokens": 412 + 96}
    assert result.cost == 0.0194  # aider's own session figure
    assert result.steps == 2
    edit = {"name": "edit", "args": {"path": "hello.py"}, "result_size": 0, "exit_code": 0}
    assert result.tool_records == [edit, edit]
    argv = json.loads(argv_file.read_text())
    assert argv[0] == f"--message={TASK}"
    unattended = {"--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore"}
    assert unattended <= set(argv)
    history = next(a.split("=", 1)[1] for a in argv if a.startswith("--chat-history-file="))
    assert Path(history) == worktree / ".git" / "shipline-aider" / f"{result.session_id}.chat.md"
    assert "--restore-chat-history" not in argv

    resumed = agent.run("Again", worktree, resume_session_id=result.session_id, timeout_s=30)

    argv = json.loads(argv_file.read_text())
    assert "--restore-chat-history" in argv and f"--chat-history-file={history}" in argv
    assert resumed.session_id == result.session_id
    assert not list(worktree.glob(".aider*"))  # nothing of aider's lands in the worktree


def test_missing_executable_is_agent_unavailable_naming_the_config_key(worktree: Path) -> None:
    agent = ExternalAgent("fast", AgentSettings(kind="codex", command="no-such-codex-xyz"))

    with pytest.raises(AgentUnavailable) as raised:
        agent.run(TASK, worktree)

    message = str(raised.value)
    assert "no-such-codex-xyz" in message and "[agents.fast] command" in message
    assert isinstance(raised.value, ShiplineError)


def test_default_command_is_the_kind_binary_on_path(worktree: Path) -> None:
    agent = ExternalAgent("g", AgentSettings(kind="gemini", env={"PATH": str(worktree)}))

    with pytest.raises(AgentUnavailable, match="`gemini` not found"):
        agent.run(TASK, worktree)


def test_hanging_agent_is_killed_at_the_timeout_and_keeps_its_session_id(
    worktree: Path,
) -> None:
    agent = replay("codex", "codex-started.jsonl", REPLAY_HANG="287")

    started = time.monotonic()
    result = agent.run(TASK, worktree, timeout_s=1.5)

    assert result.exit_reason == "timeout: killed after 1.5 s"
    assert time.monotonic() - started < 6
    assert result.session_id == "019a2a8b-65c4-7ad2-b5e4-2d4be6a3c0f1"  # resumable
    assert result.cost is None  # no usage reported: unknown, not 0
    orphans = subprocess.run(["pgrep", "-f", "^sleep 287$"], capture_output=True, text=True)
    assert orphans.stdout == ""  # the whole process group went


def test_garbage_output_is_an_error_exit_reason_not_an_exception(worktree: Path) -> None:
    result = replay("claude", "garbage.txt").run(TASK, worktree, timeout_s=30)

    assert result.exit_reason.startswith("error: unparsable output: ")
    assert "not json" in result.exit_reason
    assert result.cost is None and result.usage == {"input_tokens": 0, "output_tokens": 0}
    assert UUID.match(result.session_id)


def test_failed_agent_exit_reason_carries_exit_code_and_its_message(worktree: Path) -> None:
    failed = replay("codex", "codex-failed.jsonl", REPLAY_EXIT="1").run(TASK, worktree)
    crashed = replay(
        "gemini", "garbage.txt", REPLAY_EXIT="3", REPLAY_STDERR=f"boom: token={SECRET}"
    ).run(TASK, worktree)

    assert failed.exit_reason.startswith("error: exit 1: unexpected status 401 Unauthorized: ")
    assert crashed.exit_reason.startswith("error: exit 3: ")
    assert "boom: token=***" in crashed.exit_reason and SECRET not in crashed.exit_reason


def test_secrets_are_redacted_in_tool_records_and_the_log(tmp_path: Path, worktree: Path) -> None:
    log = tmp_path / "agent.log"

    result = replay("codex", "codex-secret.jsonl").run(TASK, worktree, log_path=log)

    [record] = result.tool_records
    assert SECRET not in json.dumps(record)
    assert record["args"]["command"] == "/bin/bash -lc 'export OPENAI_API_KEY=*** && make deploy'"
    assert SECRET not in log.read_text() and "thread.started" in log.read_text()


def test_sensitive_work_never_starts_an_agent_that_is_not_in_house(
    tmp_path: Path, worktree: Path
) -> None:
    started = tmp_path / "argv.json"
    env = {"REPLAY_OUTPUT": str(FIXTURES / "codex.jsonl"), "REPLAY_ARGV": str(started)}
    hosted = ExternalAgent("cx", AgentSettings(kind="codex", command=REPLAY, env=env))

    with pytest.raises(ConfigError) as raised:
        hosted.run(TASK, worktree, sensitive=True)

    assert "agent 'cx' is not in-house ([agents.cx] in_house = false)" in str(raised.value)
    assert not started.exists()  # the agent was never started
    assert hosted.run(TASK, worktree).exit_reason == "submitted"  # work that is not sensitive
    assert started.exists()
    started.unlink()
    in_house = AgentSettings(kind="codex", command=REPLAY, env=env, in_house=True)
    result = ExternalAgent("cx", in_house).run(TASK, worktree, sensitive=True)
    assert result.exit_reason == "submitted" and started.exists()


# --- decisions ------------------------------------------------------------------------------


def test_cost_prefers_the_agents_figure_then_the_configured_prices_then_the_table() -> None:
    tokens = {"input_tokens": 1_000_000, "output_tokens": 100_000}
    priced = AgentSettings(
        kind="codex", model="gpt-4o", price_input_per_mtok=1.0, price_output_per_mtok=10.0
    )
    listed = table_price("gpt-4o", kind="openai", base_url="", **tokens)

    assert agent_cost(priced, "openai", AgentReport(cost=0.5, **tokens)) == 0.5
    assert agent_cost(priced, "openai", AgentReport(**tokens)) == pytest.approx(2.0)
    assert listed is not None
    assert agent_cost(
        AgentSettings(kind="codex", model="gpt-4o"), "openai", AgentReport(**tokens)
    ) == pytest.approx(listed.total_usd)
    half = AgentSettings(kind="codex", model="gpt-4o", price_input_per_mtok=1.0)
    assert agent_cost(half, "openai", AgentReport(**tokens)) == pytest.approx(
        1.0 + listed.output_usd
    )
    unknown = AgentSettings(kind="codex", model="in-house-coder-7b")
    assert agent_cost(unknown, "openai", AgentReport(**tokens)) is None
    assert agent_cost(priced, "openai", AgentReport()) is None  # no tokens reported


def test_every_agent_kind_of_the_config_has_its_adapter() -> None:
    kinds = get_args(AgentSettings.model_fields["kind"].annotation)
    assert sorted(AGENT_KINDS) == sorted(kinds)
    assert {kind: agent_kind(kind).binary for kind in kinds} == {k: k for k in kinds}


def test_aider_models_are_priced_by_their_vendor_prefix() -> None:
    assert vendor_of("anthropic/claude-sonnet-4-5") == "anthropic"
    assert vendor_of("gpt-4o") == "openai"
    assert vendor_of("gemini/gemini-2.5-pro") == "google"
    assert vendor_of("openrouter/anthropic/claude-3.5-sonnet") == ""
    assert vendor_of("deepseek-coder") == ""


def test_commands_put_the_task_last_and_out_of_reach_of_options(tmp_path: Path) -> None:
    def call(kind: str, resume: bool) -> AgentCall:
        settings = AgentSettings(kind=kind, model="m", args=["--extra"])  # type: ignore[arg-type]
        return AgentCall(settings, "-rf everything", tmp_path, "ID", resume)

    assert codex.arguments(call("codex", True))[:2] == ["exec", "resume"]
    assert codex.arguments(call("codex", True))[-4:] == ["--extra", "--", "ID", "-rf everything"]
    assert codex.arguments(call("codex", False))[-3:] == ["--extra", "--", "-rf everything"]
    assert claude.arguments(call("claude", True))[-5:] == [
        "--resume", "ID", "--extra", "--", "-rf everything"
    ]  # fmt: skip
    assert "--session-id" in claude.arguments(call("claude", False))
    assert gemini.arguments(call("gemini", True))[0] == "--prompt=-rf everything"
    assert gemini.arguments(call("gemini", True))[-3:] == ["--resume", "ID", "--extra"]
    assert aider.arguments(call("aider", False))[0] == "--message=-rf everything"


# --- an external agent as a phase's session runner, through the CLI ------------------------


def codex_writes(path: str, content: str, summary: str) -> Wire:
    """The scripted model behind codex: write `content` into `path` with one shell command,
    then answer `summary`."""

    def wire(body: dict[str, Any], answered: bool, call_id: str) -> bytes:
        if answered:
            item: dict[str, Any] = {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{call_id}",
                "content": [{"type": "output_text", "text": summary}],
            }
        else:
            item = {
                "type": "function_call",
                "name": "exec_command",
                "call_id": call_id,
                "arguments": json.dumps({"cmd": f"cat > {path} <<'PYEOF'\n{content}PYEOF"}),
            }
        usage = {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT, "total_tokens": 120}
        return _sse(
            [
                {"type": "response.created", "response": {"id": f"resp_{call_id}"}},
                {"type": "response.output_item.done", "item": item},
                {
                    "type": "response.completed",
                    "response": {"id": f"resp_{call_id}", "usage": usage},
                },
            ]
        )

    return wire


def codex_agent_toml(name: str, binary: Path, model: ScriptedModel, home: Path, *lines: str) -> str:
    """`[agents.NAME]`: the real codex CLI on the scripted model (a custom model provider on
    loopback), with `lines` added to the entry."""
    home.mkdir()
    provider = {
        "model_provider": '"loopback"',
        "model_providers.loopback.name": '"loopback"',
        "model_providers.loopback.base_url": f'"{model.url}/v1"',
        "model_providers.loopback.env_key": '"LOOPBACK_API_KEY"',
        "model_providers.loopback.wire_api": '"responses"',
    }
    args = ", ".join(json.dumps(w) for k, v in provider.items() for w in ("-c", f"{k}={v}"))
    added = "".join(f"{line}\n" for line in lines)
    return f"""
[agents.{name}]
kind = "codex"
command = {json.dumps(str(binary))}
model = "gpt-4o-mini"
args = [{args}]
env = {{ CODEX_HOME = {json.dumps(str(home))}, LOOPBACK_API_KEY = "dummy" }}
{added}"""


def stand_in_agent_toml(name: str, started: Path) -> str:
    """`[agents.NAME]`: replay.py standing in for codex; it writes its argv to `started` as
    soon as it runs, so a test can tell that it never started."""
    sample = str(FIXTURES / "codex.jsonl")
    return f"""
[agents.{name}]
kind = "codex"
command = {json.dumps(REPLAY)}
env = {{ REPLAY_OUTPUT = {json.dumps(sample)}, REPLAY_ARGV = {json.dumps(str(started))} }}
"""


IMPLEMENT_BY_CX = '\n[phases.implement]\nsession = "cx"\n'


def test_codex_as_implements_session_runner_turns_ci_green_and_merges(
    tmp_path: Path, scripted: Callable[[Wire], ScriptedModel]
) -> None:
    """`[phases.implement] session = "cx"`: the real codex CLI writes the code in the ticket's
    worktree, shipline commits it, the judge is green, and main gets it."""
    from conftest import demo_ticket
    from test_workspaces_e2e import (
        assert_every_commit_is_green,
        attempts,
        git,
        main_log,
        rows,
        sample_project,
        shout_code,
    )

    binary = npm_cli("codex")
    model = scripted(codex_writes("greet/cli.py", shout_code(), "Added --shout to greet/cli.py."))
    extra = IMPLEMENT_BY_CX + codex_agent_toml("cx", binary, model, tmp_path / "codex-home")
    project = sample_project(tmp_path / "repo", extra)
    feature = demo_ticket("feature")
    ticket_id = project.add("feature", feature["title"], feature["body"])
    project.cli("run", timeout=300)
    detail = project.show(ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    assert [a["verdict"]["passed"] for a in attempts(detail, "implement")] == [True]
    # the agent's run is one recorded call, priced from the table (codex reports tokens only)
    [(provider_name, tier, tokens_in, cost)] = rows(
        project,
        "SELECT provider, tier, input_tokens, cost FROM calls "
        "WHERE ticket_id = ? AND phase = 'implement' AND role = 'producer'",
        ticket_id,
    )
    assert (provider_name, tier, tokens_in) == ("cx", "agent", 2 * USAGE_IN)
    assert cost == pytest.approx(listed_usd("gpt-4o-mini", "openai", 2 * USAGE_IN, 2 * USAGE_OUT))
    assert "--shout" in git(project.root, "show", "main:greet/cli.py")
    assert len(main_log(project)) == 2
    assert_every_commit_is_green(project, tmp_path)


@pytest.mark.parametrize(
    ("flags", "policy"),
    [(("--sensitive",), ""), (("--lane", "3"), "\n[lanes.3]\nin_house_only = true\n")],
    ids=["sensitive-ticket", "in-house-only-lane"],
)
def test_sensitive_ticket_never_starts_a_hosted_agent(
    tmp_path: Path, flags: tuple[str, ...], policy: str
) -> None:
    """A ticket whose work must stay in-house hands off before its code phase would start an
    agent that is not `in_house`: the agent never runs, whatever model it would have used."""
    from test_workspaces_e2e import module_ticket_rules, rows, sample_project

    started = tmp_path / "started.json"
    extra = IMPLEMENT_BY_CX + stand_in_agent_toml("cx", started) + policy
    project = sample_project(tmp_path / "repo", extra, module_ticket_rules(1))
    ticket_id = project.add("hotfix", "Add extra 1", "Module extra_1.", *flags)
    project.cli("run")

    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    reason = detail["handoff_reason"]
    assert reason.startswith("implement: agent 'cx' is not in-house ([agents.cx] in_house = false)")
    assert "sensitive" in reason
    assert not started.exists()  # the agent was never started
    assert rows(project, "SELECT COUNT(*) FROM calls WHERE provider = 'cx'") == [(0,)]
    # the phases before it ran, on the in-house scripted provider
    assert [(p["phase"], p["status"]) for p in detail["phases"][:2]] == [
        ("diagnose", "passed"),
        ("tests", "passed"),
    ]


def test_in_house_agent_runs_a_sensitive_ticket(
    tmp_path: Path, scripted: Callable[[Wire], ScriptedModel]
) -> None:
    """`[agents.cx] in_house = true` (codex on a model served on loopback): a sensitive ticket's
    code is written by it, judged green and merged."""
    from test_workspaces_e2e import git, module_ticket_rules, rows, sample_project

    binary = npm_cli("codex")
    code = "def value() -> int:\n    return 1\n"
    model = scripted(codex_writes("greet/extra_1.py", code, "Added greet/extra_1.py."))
    agent = codex_agent_toml("cx", binary, model, tmp_path / "codex-home", "in_house = true")
    project = sample_project(tmp_path / "repo", IMPLEMENT_BY_CX + agent, module_ticket_rules(1))
    ticket_id = project.add("hotfix", "Add extra 1", "Module extra_1.", "--sensitive")
    project.cli("run", timeout=300)

    detail = project.show(ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    assert model.requests  # the in-house model served the agent
    [(provider_name, tier)] = rows(
        project,
        "SELECT provider, tier FROM calls "
        "WHERE ticket_id = ? AND phase = 'implement' AND role = 'producer'",
        ticket_id,
    )
    assert (provider_name, tier) == ("cx", "agent")
    assert git(project.root, "show", "main:greet/extra_1.py") == code


def test_a_reached_budget_stops_an_external_session_before_it_starts(tmp_path: Path) -> None:
    """The budget is checked before an agent starts, as before each provider call: the tests
    phase (on a paid tier, without a validator) spends the ticket's budget, and implement's
    agent is never started."""
    from conftest import SCRIPTED_TOML
    from test_workspaces_e2e import JUDGE_TOML, module_ticket_rules, rows, sample_project

    started = tmp_path / "started.json"
    project = sample_project(tmp_path / "repo", rules=module_ticket_rules(1))
    paid = """
[providers.paid]
kind = "scripted"
script = "script.yaml"
price_input_per_mtok = 1000.0
price_output_per_mtok = 1000.0

[phases.tests]
tier = "paid"
validator = false

[budgets]
per_ticket_usd = 0.01
"""
    toml = SCRIPTED_TOML + 'paid = ["paid"]\n' + JUDGE_TOML + paid + IMPLEMENT_BY_CX
    (project.root / "shipline.toml").write_text(toml + stand_in_agent_toml("cx", started))
    ticket_id = project.add("hotfix", "Add extra 1", "Module extra_1.")
    project.cli("run")

    detail = project.show(ticket_id)
    assert detail["status"] == "needs-human"
    reason = detail["handoff_reason"]
    assert reason.startswith(f"implement: budget reached: ticket #{ticket_id} spent $")
    assert "of its $0.01 budget ([budgets] per_ticket_usd)" in reason
    assert not started.exists()  # the agent was never started
    paid_phases = rows(project, "SELECT DISTINCT phase FROM calls WHERE cost > 0")
    assert paid_phases == [("tests",)]
