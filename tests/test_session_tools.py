"""The built-in agent loop's tools: confined to the worktree, no network, every call recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shipline.sessions import DEFAULT_DENY, TOOL_SPECS, WorktreeTools, denied_by
from shipline.sessions.tools import EXIT_REFUSED, EXIT_TIMEOUT, EXIT_TOOL_ERROR

OPENAI_KEY = "sk-proj-Abc123DEF456ghi789JKL012mno345"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "worktree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "calc.py").write_text(
        "def add(a, b):\n    return a - b\n\n\ndef sub(a, b):\n    return a - b\n"
    )
    (root / "README.md").write_text("# calc\nadd and sub\n")
    (root / ".git").write_text("gitdir: /somewhere/else\n")
    return root


@pytest.fixture
def tools(tree: Path) -> WorktreeTools:
    return WorktreeTools(tree, command_timeout_s=10)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    path = tmp_path / "outside"
    path.mkdir()
    (path / "secret.txt").write_text("top secret")
    return path


# --- files ------------------------------------------------------------------------------------


def test_read_file_returns_numbered_lines_and_a_range(tools: WorktreeTools) -> None:
    result = tools.read_file("pkg/calc.py", start_line=1, end_line=2)
    assert result.ok
    assert result.text.splitlines() == ["    1  def add(a, b):", "    2      return a - b"]


def test_write_file_creates_parents_inside_the_worktree(tools: WorktreeTools, tree: Path) -> None:
    result = tools.write_file("pkg/new/mod.py", "X = 1\n")
    assert result.ok
    assert (tree / "pkg" / "new" / "mod.py").read_text() == "X = 1\n"


def test_edit_replaces_a_unique_exact_match_and_reports_the_count(
    tools: WorktreeTools, tree: Path
) -> None:
    result = tools.edit(
        "pkg/calc.py", "def add(a, b):\n    return a - b", "def add(a, b):\n    return a + b"
    )
    assert result.ok
    assert result.text == "replaced 1 of 1 match in pkg/calc.py"
    assert "return a + b" in (tree / "pkg" / "calc.py").read_text()


def test_edit_with_ambiguous_or_missing_search_changes_nothing_and_says_why(
    tools: WorktreeTools, tree: Path
) -> None:
    before = (tree / "pkg" / "calc.py").read_text()
    ambiguous = tools.edit("pkg/calc.py", "return a - b", "return 0")
    assert ambiguous.exit_code == EXIT_TOOL_ERROR
    assert "matches 2 times" in ambiguous.text
    missing = tools.edit("pkg/calc.py", "return a * b", "return 0")
    assert missing.exit_code == EXIT_TOOL_ERROR
    assert "0 matches" in missing.text
    assert (tree / "pkg" / "calc.py").read_text() == before
    everywhere = tools.edit("pkg/calc.py", "return a - b", "return 0", replace_all=True)
    assert everywhere.text == "replaced 2 of 2 matches in pkg/calc.py"


def test_list_dir_marks_directories_and_hides_git(tools: WorktreeTools) -> None:
    assert tools.list_dir().text.splitlines() == ["README.md", "pkg/"]


def test_grep_finds_lines_with_their_location(tools: WorktreeTools) -> None:
    result = tools.grep(r"def \w+\(a, b\)")
    assert result.text.splitlines() == [
        "pkg/calc.py:1: def add(a, b):",
        "pkg/calc.py:5: def sub(a, b):",
    ]
    assert tools.grep("nothing-like-this").exit_code == 1
    bad = tools.grep("(unclosed")
    assert bad.exit_code == EXIT_TOOL_ERROR and "bad regular expression" in bad.text


# --- confinement ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["../outside/secret.txt", "/etc/passwd", "pkg/../../outside/secret.txt", ".git"]
)
def test_paths_outside_the_worktree_are_refused(tools: WorktreeTools, path: str) -> None:
    for result in (
        tools.read_file(path),
        tools.write_file(path, "x"),
        tools.edit(path, "a", "b"),
        tools.list_dir(path),
        tools.grep("x", path),
    ):
        assert result.exit_code == EXIT_REFUSED, result.text
        assert result.text.startswith("refused:")


def test_symlink_escape_is_refused(tools: WorktreeTools, tree: Path, outside: Path) -> None:
    (tree / "link_dir").symlink_to(outside)
    (tree / "link_file").symlink_to(outside / "secret.txt")
    assert tools.read_file("link_file").exit_code == EXIT_REFUSED
    assert tools.read_file("link_dir/secret.txt").exit_code == EXIT_REFUSED
    assert tools.write_file("link_dir/new.txt", "x").exit_code == EXIT_REFUSED
    assert tools.edit("link_file", "top", "no").exit_code == EXIT_REFUSED
    assert tools.list_dir("link_dir").exit_code == EXIT_REFUSED
    assert "top secret" not in tools.grep("secret").text
    assert (outside / "secret.txt").read_text() == "top secret"
    assert not (outside / "new.txt").exists()


# --- run_command ------------------------------------------------------------------------------


def test_run_command_runs_in_the_worktree_and_reports_its_exit_code(
    tools: WorktreeTools, tree: Path
) -> None:
    result = tools.run_command("pwd; ls pkg; exit 3")
    assert result.exit_code == 3
    assert str(tree.resolve()) in result.text
    assert "calc.py" in result.text
    assert result.text.rstrip().endswith("[exit 3]")


@pytest.mark.parametrize(
    ("command", "rule"),
    [
        ("curl https://example.com", "curl"),
        ("pytest -q && wget http://x/y", "wget"),
        ("git -C . push origin main", "git push"),
        ("FOO=1 sudo -E ssh host", "ssh"),
        ("bash -c 'nc -l 8080'", "nc"),
        ("echo $(curl -s x)", "curl"),
        ("python -m pip install requests", "pip install"),
    ],
)
def test_network_commands_are_refused_with_the_reason(
    tools: WorktreeTools, tree: Path, command: str, rule: str
) -> None:
    result = tools.run_command(command + "; touch ran.txt")
    assert result.exit_code == EXIT_REFUSED
    assert f"`{rule}` is not allowed" in result.text
    assert "network" in result.text
    assert not (tree / "ran.txt").exists()


@pytest.mark.parametrize(
    "command", ["git commit -m 'push the fix'", "grep -r curl .", "echo ssh", "python -m pytest -q"]
)
def test_ordinary_commands_mentioning_network_words_are_allowed(command: str) -> None:
    assert denied_by(command, DEFAULT_DENY) is None


def test_deny_list_is_configurable(tree: Path) -> None:
    tools = WorktreeTools(tree, deny=["make deploy"])
    assert tools.run_command("make deploy").exit_code == EXIT_REFUSED
    assert tools.run_command("echo curl is fine here").ok


def test_hanging_command_is_killed_at_the_timeout(tree: Path) -> None:
    tools = WorktreeTools(tree, command_timeout_s=0.5)
    started = time.monotonic()
    result = tools.run_command("sleep 1000 & sleep 1000", timeout_s=60)  # capped by the config
    assert result.exit_code == EXIT_TIMEOUT
    assert "timed out after 0.5 s" in result.text
    assert time.monotonic() - started < 4


def test_commands_do_not_see_secret_variables(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "not-for-agents")
    monkeypatch.setenv("SHIPLINE_HARMLESS", "visible")
    result = WorktreeTools(tree).run_command("env")
    assert "not-for-agents" not in result.text
    assert "OPENAI_API_KEY" not in result.text
    assert "SHIPLINE_HARMLESS=visible" in result.text


def test_command_output_is_bounded(tree: Path) -> None:
    tools = WorktreeTools(tree, max_output_chars=2000)
    result = tools.run_command("seq 1 100000")
    assert len(result.text) < 2300
    assert result.text.startswith("1\n2\n")
    assert "100000" in result.text


# --- records ----------------------------------------------------------------------------------


def test_every_call_is_recorded_with_secrets_redacted(tools: WorktreeTools) -> None:
    tools.write_file("config.env", f"OPENAI_API_KEY={OPENAI_KEY}\n")
    tools.run_command(f"echo token {OPENAI_KEY}")
    tools.read_file("missing.py")
    assert [r.name for r in tools.records] == ["write_file", "run_command", "read_file"]
    write, run, read = tools.records
    assert write.args == {"path": "config.env", "content": "OPENAI_API_KEY=***\n"}
    assert write.exit_code == 0
    assert run.args == {"command": "echo token sk-***"}
    assert run.result_size > 0
    assert read.exit_code == EXIT_TOOL_ERROR
    serialised = json.dumps([r.as_dict() for r in tools.records])
    assert OPENAI_KEY not in serialised
    assert set(json.loads(serialised)[0]) == {"name", "args", "result_size", "exit_code"}


def test_command_output_returned_to_the_model_is_redacted(tools: WorktreeTools) -> None:
    result = tools.run_command(f"echo {OPENAI_KEY}")
    assert OPENAI_KEY not in result.text
    assert "sk-***" in result.text


def test_long_arguments_are_cut_in_the_record_and_the_cut_is_said(tools: WorktreeTools) -> None:
    tools.write_file("big.txt", "y" * 10_000)
    assert tools.records[-1].args["content"].endswith("…[+8000 chars]")


def test_dispatch_by_name_handles_unknown_tools_and_bad_arguments(tools: WorktreeTools) -> None:
    assert tools.call("list_dir", {"path": "pkg"}).text == "calc.py"
    unknown = tools.call("rm_rf", {"path": "/"})
    assert unknown.exit_code == EXIT_TOOL_ERROR and "unknown tool 'rm_rf'" in unknown.text
    bad = tools.call("read_file", {"file": "x"})
    assert bad.exit_code == EXIT_TOOL_ERROR and "bad arguments" in bad.text
    assert [r.name for r in tools.records][-2:] == ["rm_rf", "read_file"]
    assert {spec["name"] for spec in TOOL_SPECS} == {
        "read_file",
        "write_file",
        "edit",
        "list_dir",
        "grep",
        "run_command",
    }
