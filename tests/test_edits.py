"""Edits, not whole-file rewrites: parsing `### Edit:` SEARCH/REPLACE blocks and applying them
strictly (workspaces/edits.py), all or nothing, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipline.config import parse_settings
from shipline.engine.prompt import render_blocks
from shipline.errors import ConfigError
from shipline.phases import get_phase
from shipline.phases.markdown import (
    Changes,
    FileBlock,
    FileBlockError,
    FileEdit,
    SearchReplace,
    parse_changes,
    scan_changes,
)
from shipline.workspaces.edits import (
    EditError,
    apply_search_replace,
    line_ending,
    plan_writes,
    whole_file_objection,
)

FENCE = "```"


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


def edit(path: str, *blocks: str) -> str:
    return f"### Edit: {path}\n{FENCE}python\n{''.join(blocks)}{FENCE}\n"


def sr(number: int, search: str, replace: str) -> SearchReplace:
    return SearchReplace(number, search, replace)


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # one edit, two blocks, numbered in order
            edit("app.py", block("a = 1\n", "a = 2\n"), "\n", block("b = 1\n", "b = 2\nc = 3\n")),
            Changes(edits=(FileEdit("app.py", (
                sr(1, "a = 1\n", "a = 2\n"), sr(2, "b = 1\n", "b = 2\nc = 3\n"),
            )),)),
        ),
        (  # an empty REPLACE deletes; an empty SEARCH appends
            edit("./app.py", block("old()\n", ""), block("", "new()\n")),
            Changes(edits=(FileEdit("app.py", (sr(1, "old()\n", ""), sr(2, "", "new()\n"))),)),
        ),
        (  # two edits of one file are one edit; a new file stays whole, beside it
            edit("a.py", block("x\n", "y\n"))
            + "### File: b.py\n```python\nB = 1\n```\n"
            + "**Edit:** `a.py`\n~~~~\n"
            + block("y\n", "z\n")
            + "~~~~\n",
            Changes(
                files=(FileBlock("b.py", "B = 1\n"),),
                edits=(FileEdit("a.py", (sr(1, "x\n", "y\n"), sr(2, "y\n", "z\n"))),),
            ),
        ),
        (  # marker-like lines that are not markers are content
            edit("doc.md", block("<<<<<<< HEAD\n", "======== title\n>>>>>>> main\n")),
            Changes(
                edits=(FileEdit("doc.md", (
                    sr(1, "<<<<<<< HEAD\n", "======== title\n>>>>>>> main\n"),
                )),)
            ),
        ),
        (  # a form feed inside a line stays in it
            edit("old.c", block("a\x0cb\n", "c\n")),
            Changes(edits=(FileEdit("old.c", (sr(1, "a\x0cb\n", "c\n"),)),)),
        ),
    ],
)  # fmt: skip
def test_edit_blocks_parse_into_numbered_search_replace_pairs(text: str, expected: Changes) -> None:
    assert scan_changes(text) == (expected, [])
    assert parse_changes(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            edit("a.py", "<<<<<<< SEARCH\nx = 1\n>>>>>>> REPLACE\n"),
            "a.py edit block 1 (SEARCH starting 'x = 1') has no '=======' line after its "
            "SEARCH lines",
        ),
        (
            edit("a.py", "<<<<<<< SEARCH\nx = 1\n"),
            "a.py edit block 1 (SEARCH starting 'x = 1') has no '=======' line",
        ),
        (
            edit("a.py", block("a\n", "b\n"), "<<<<<<< SEARCH\n    y = 2\n=======\ny = 3\n"),
            "a.py edit block 2 (SEARCH starting 'y = 2') is never closed with '>>>>>>> REPLACE'",
        ),
        (
            edit("a.py", "<<<<<<< SEARCH\nx\n=======\ny\n=======\nz\n>>>>>>> REPLACE\n"),
            "a.py edit block 1 (SEARCH starting 'x') has '=======' inside its REPLACE lines",
        ),
        (
            edit("a.py", "x = 1\n", block("a\n", "b\n")),
            "the edit of a.py has text outside a SEARCH/REPLACE block: 'x = 1'",
        ),
        (
            edit("a.py", "=======\n"),
            "edit block 1 of a.py: '=======' comes before any '<<<<<<< SEARCH' line",
        ),
        (edit("a.py"), "'### Edit: a.py' has no SEARCH/REPLACE block"),
        ("### Edit: a.py\nchange x to y\n", "'### Edit: a.py' is not followed by a fenced code"),
        ("### Edit: a.py\n```\n" + block("a\n", "b\n"), "the code block for a.py is never closed"),
        (edit("../x.py", block("a\n", "b\n")), "leaves the repository"),
        (edit(".git/config", block("a\n", "b\n")), "inside .git/"),
        ("### Edit:\n```\n```\n", "a '### Edit:' heading has no path"),
        (
            "### File: a.py\n```\nA\n```\n" + edit("a.py", block("A\n", "B\n")),
            "a.py has both a '### File:' block and a '### Edit:' block",
        ),
    ],
)
def test_a_malformed_edit_is_a_problem_and_cannot_be_applied(text: str, problem: str) -> None:
    _, problems = scan_changes(text)
    assert len(problems) >= 1 and problem in problems[-1], problems
    with pytest.raises(FileBlockError):
        parse_changes(text)


@pytest.mark.parametrize("phase", ["implement", "fix-ci", "tests"])
@pytest.mark.parametrize(
    "text",
    [
        edit("tests/test_a.py", "<<<<<<< SEARCH\nx = 1\n"),  # unterminated SEARCH
        edit("tests/test_a.py", "<<<<<<< SEARCH\nx\n>>>>>>> REPLACE\n"),  # no =======
        "### Edit: tests/test_a.py\nreplace x with y\n",  # no fenced block
    ],
)
def test_the_phase_checks_object_to_a_malformed_edit_without_a_judge(phase: str, text: str) -> None:
    objections = get_phase(phase).check(text, {})
    assert objections and any("tests/test_a.py" in o for o in objections), objections


def test_a_well_formed_edit_passes_the_checks_and_locks_the_test_file_it_edits() -> None:
    tests = edit("tests/test_a.py", block("", "def test_r1_more():\n    assert f() == 2\n"))
    assert get_phase("tests").check(tests, {}) == []
    code = edit("tests/test_a.py", block("    assert f() == 2\n", "    assert True\n"))
    assert get_phase("implement").check(code, {"tests.md": tests}) == [
        "implementation.md modifies the locked test tests/test_a.py"
    ]
    assert get_phase("tests").check(edit("app.py", block("a\n", "b\n")), {}) == [
        "tests.md writes app.py, which is not a test file (put tests under tests/ or name "
        "them test_*.py)"
    ]


# --- applying, in memory ------------------------------------------------------------------------

ACCOUNT = """\
class Account:
    def deposit(self, cents):
        self.balance += cents

    def withdraw(self, cents):
        self.balance -= cents
"""


@pytest.mark.parametrize(
    ("content", "blocks", "expected"),
    [
        pytest.param(
            ACCOUNT,
            [sr(1, "        self.balance -= cents\n", "        if cents > self.balance:\n"
                "            raise ValueError\n        self.balance -= cents\n")],
            ACCOUNT.replace("        self.balance -= cents\n", "        if cents > self.balance:\n"
                            "            raise ValueError\n        self.balance -= cents\n"),
            id="an exact single match applies",
        ),
        pytest.param(
            ACCOUNT,
            [sr(1, "    def deposit(self, cents):\n        self.balance += cents\n\n", "")],
            ACCOUNT.replace("    def deposit(self, cents):\n        self.balance += cents\n\n", ""),
            id="an empty REPLACE deletes",
        ),
        pytest.param(
            ACCOUNT, [sr(1, ACCOUNT, "X = 1\n")], "X = 1\n", id="a SEARCH spanning the whole file",
        ),
        pytest.param(
            ACCOUNT,
            [sr(1, "    def withdraw(self, cents):\n", "    def take(self, cents):\n"),
             sr(2, "    def take(self, cents):\n", "    def take_out(self, cents):\n")],
            ACCOUNT.replace("def withdraw", "def take_out"),
            id="a later block sees what the earlier left",
        ),
        pytest.param(
            ACCOUNT, [sr(1, "", "# end\n")], ACCOUNT + "# end\n", id="an empty SEARCH appends"
        ),
        pytest.param(
            "a\nb", [sr(1, "b\n", "c\n")], "a\nc", id="a missing final newline stays missing"
        ),
        pytest.param(
            "a\nb", [sr(1, "", "c\n")], "a\nb\nc", id="an append to a file with no final newline"
        ),
        pytest.param(
            ACCOUNT.replace("\n", "\r\n"),
            [sr(1, "        self.balance -= cents\n", "        self.balance -= 2 * cents\n")],
            ACCOUNT.replace("-= cents", "-= 2 * cents").replace("\n", "\r\n"),
            id="a CRLF file keeps its line endings",
        ),
        pytest.param("", [sr(1, "", "x = 1\n")], "x = 1\n", id="an append to an empty file"),
    ],
)  # fmt: skip
def test_search_replace_applies_exact_whole_line_matches(
    content: str, blocks: list[SearchReplace], expected: str
) -> None:
    assert apply_search_replace("a.py", content, tuple(blocks)) == (expected, [])


@pytest.mark.parametrize(
    ("content", "blocks", "problems"),
    [
        pytest.param(
            ACCOUNT, [sr(1, "        self.balance -= amount\n", "")],
            ["a.py edit block 1 (SEARCH starting 'self.balance -= amount'): not found in the "
             "file: copy the lines exactly, whole lines with their indentation"],
            id="not found",
        ),
        pytest.param(
            ACCOUNT,
            [sr(1, "    def withdraw(self, cents):\n", ""),
             sr(2, "    def deposit(self, amount):\n", "")],
            ["a.py edit block 2 (SEARCH starting 'def deposit(self, amount):'): not found in the "
             "file as blocks 1–1 left it: copy the lines exactly, whole lines with their "
             "indentation"],
            id="the second block fails",
        ),
        pytest.param(
            ACCOUNT,
            [sr(1, "    def withdraw(self, cents):\n", ""),
             sr(2, "    def withdraw(self, cents):\n", "")],
            ["a.py edit block 2 (SEARCH starting 'def withdraw(self, cents):'): not found in the "
             "file as blocks 1–1 left it: copy the lines exactly, whole lines with their "
             "indentation"],
            id="a block that an earlier one removed",
        ),
        pytest.param(
            ACCOUNT, [sr(1, "    def deposit(self, cents):\n", "    def deposit(self, cents):\n"),
                      sr(2, "        self.balance\n", "")],
            ["a.py edit block 2 (SEARCH starting 'self.balance'): not found in the file as blocks "
             "1–1 left it: copy the lines exactly, whole lines with their indentation"],
            id="part of a line is not a match",
        ),
        pytest.param(
            "x = 1\ny = 2\nx = 1\n", [sr(1, "x = 1\n", "x = 3\n")],
            ["a.py edit block 1 (SEARCH starting 'x = 1'): found 2 times: add neighbouring lines "
             "so that it matches once"],
            id="found twice",
        ),
        pytest.param(
            "yx = 1\n", [sr(1, "x = 1\n", "")],
            ["a.py edit block 1 (SEARCH starting 'x = 1'): not found in the file: copy the lines "
             "exactly, whole lines with their indentation"],
            id="the end of a line is not a match",
        ),
        pytest.param(
            "def f():\n    return 1\n", [sr(1, "def f():\n  return 1\n", "")],
            ["a.py edit block 1 (SEARCH starting 'def f():'): not found in the file: copy the "
             "lines exactly, whole lines with their indentation"],
            id="other indentation is not guessed",
        ),
        pytest.param(
            "a\r\nb\n", [sr(1, "a\n", "c\n")],
            ["a.py mixes CRLF and LF line endings: SEARCH blocks cannot match it exactly "
             "(normalise its line endings first)"],
            id="mixed line endings are refused",
        ),
    ],
)  # fmt: skip
def test_a_search_that_does_not_match_exactly_once_names_its_block(
    content: str, blocks: list[SearchReplace], problems: list[str]
) -> None:
    _, found = apply_search_replace("a.py", content, tuple(blocks))
    assert found == problems


@pytest.mark.parametrize(
    ("content", "ending"),
    [("", "\n"), ("a\nb\n", "\n"), ("a\r\nb\r\n", "\r\n"), ("a\r\nb", "\r\n"),
     ("a\r\nb\n", None), ("a\rb\n", None), ("a\r", None)],
)  # fmt: skip
def test_line_endings_are_lf_crlf_or_mixed(content: str, ending: str | None) -> None:
    assert line_ending(content) == ending


@pytest.mark.parametrize(
    ("exists", "edit_format", "origin", "conflicted", "allowed"),
    [
        (False, "search-replace", None, (), True),  # a new file is written whole
        (True, "search-replace", None, (), False),  # an existing one is edited
        (True, "whole", None, (), True),  # unless the phase says so
        (True, "search-replace", "ci", ("a.py",), False),  # fix-ci after red CI edits
        (True, "search-replace", "merge", ("a.py",), True),  # a conflicted file, after a merge
        (True, "search-replace", "merge", ("b.py",), False),  # another file, after a merge
        (True, "search-replace", "merge", (), False),  # red after rebase: no conflict
        (False, "search-replace", "merge", (), True),
    ],
)
def test_whole_file_blocks_write_new_files_and_existing_ones_only_by_exception(
    exists: bool, edit_format: str, origin: str | None, conflicted: tuple[str, ...], allowed: bool
) -> None:
    found = whole_file_objection(
        "a.py", exists=exists, edit_format=edit_format, origin=origin, conflicted=conflicted
    )
    if allowed:
        assert found is None
    else:
        assert found == (
            "a.py exists: edit it with SEARCH/REPLACE blocks (### Edit: a.py); whole-file "
            "blocks are for new files"
        )


# --- planning writes on real files: all or nothing ------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("A = 1\nB = 2\n")
    (root / "pkg" / "b.py").write_text("C = 3\n")
    (root / "win.py").write_bytes(b"X = 1\r\nY = 2\r\n")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_edits_in_two_files_and_a_new_file_are_planned_together(tree: Path) -> None:
    text = (
        edit("pkg/a.py", block("B = 2\n", "B = 20\n"))
        + edit("pkg/b.py", block("C = 3\n", ""))
        + edit("win.py", block("Y = 2\n", "Y = 3\n"))
        + "### File: pkg/c.py\n```python\nD = 4\n```\n"
    )
    before = snapshot(tree)
    writes = plan_writes(tree, parse_changes(text))
    assert writes == [
        ("pkg/c.py", "D = 4\n"),
        ("pkg/a.py", "A = 1\nB = 20\n"),
        ("pkg/b.py", ""),
        ("win.py", "X = 1\r\nY = 3\r\n"),
    ]
    assert snapshot(tree) == before  # planning writes nothing


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        (  # the second file's block fails: the first file's good edit is not written either
            edit("pkg/a.py", block("A = 1\n", "A = 10\n"))
            + edit("pkg/b.py", block("C = 4\n", "C = 5\n")),
            ["pkg/b.py edit block 1 (SEARCH starting 'C = 4'): not found in the file: copy the "
             "lines exactly, whole lines with their indentation"],
        ),
        (
            edit("pkg/missing.py", block("A = 1\n", "A = 2\n")),
            ["pkg/missing.py edit block 1 (SEARCH starting 'A = 1'): the file does not exist; a "
             "new file is written whole with '### File: pkg/missing.py'"],
        ),
        (
            "### File: pkg/a.py\n```python\nA = 2\n```\n" + edit("pkg/b.py", block("C = 3\n", "")),
            ["pkg/a.py exists: edit it with SEARCH/REPLACE blocks (### Edit: pkg/a.py); "
             "whole-file blocks are for new files"],
        ),
        (
            edit("pkg", block("A = 1\n", "")),
            ["pkg edit block 1 (SEARCH starting 'A = 1'): the file is a directory; a new file is "
             "written whole with '### File: pkg'"],
        ),
        (
            edit("pkg/a.py", block("A = 1\n", "")) + edit("pkg/a.py", block("A = 1\n", "")),
            ["pkg/a.py edit block 2 (SEARCH starting 'A = 1'): not found in the file as blocks "
             "1–1 left it: copy the lines exactly, whole lines with their indentation"],
        ),
    ],
)  # fmt: skip
def test_any_failed_block_refuses_every_write(tree: Path, text: str, problems: list[str]) -> None:
    before = snapshot(tree)
    with pytest.raises(EditError) as caught:
        plan_writes(tree, parse_changes(text))
    assert caught.value.problems == problems
    assert snapshot(tree) == before


def test_an_edit_through_a_symlink_out_of_the_tree_or_of_binary_is_refused(
    tree: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.py"
    outside.write_text("A = 1\n")
    (tree / "link.py").symlink_to(outside)
    (tree / "blob.bin").write_bytes(b"\xff\xfeA = 1\n")
    text = edit("link.py", block("A = 1\n", "A = 2\n")) + edit("blob.bin", block("A = 1\n", ""))
    with pytest.raises(EditError) as caught:
        plan_writes(tree, parse_changes(text))
    assert caught.value.problems[0].startswith("path 'link.py' leads outside the worktree")
    assert caught.value.problems[1] == "blob.bin is not UTF-8 text: SEARCH/REPLACE edits text files"
    assert outside.read_text() == "A = 1\n"


def test_edit_format_whole_lets_a_file_block_replace_an_existing_file(tree: Path) -> None:
    text = "### File: pkg/a.py\n```python\nA = 2\n```\n"
    assert plan_writes(tree, parse_changes(text), edit_format="whole") == [("pkg/a.py", "A = 2\n")]
    merge = plan_writes(tree, parse_changes(text), origin="merge", conflicted=["pkg/a.py"])
    assert merge == [("pkg/a.py", "A = 2\n")]


# --- configuration and prompt -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ({"implement": {"edit_format": "diff"}}, "[phases.implement.edit_format] Input should be"),
        ({"plan": {"edit_format": "whole"}}, "[phases.plan] edit_format: only the code phases"),
    ],
)
def test_a_bad_edit_format_is_a_config_error(phases: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({"phases": phases}, "shipline.toml")
    assert message in str(caught.value)


def test_edit_format_defaults_to_search_replace_and_may_be_whole() -> None:
    settings = parse_settings({"phases": {"fix-ci": {"edit_format": "whole"}}}, "shipline.toml")
    assert settings.phase("implement").edit_format == "search-replace"
    assert settings.phase("fix-ci").edit_format == "whole"


@pytest.mark.parametrize("edit_format", ["search-replace", "whole"])
def test_the_prompt_asks_for_edits_of_existing_files_and_whole_new_files(
    edit_format: str,
) -> None:
    phase = get_phase("implement")
    variables = {
        "ticket": {"id": 1, "kind": "hotfix", "lane": 1, "title": "t", "body": "b"},
        "inputs": {},
        "history": [],
        "note": None,
        "deliverable": phase.deliverable,
        "phase": phase,
        "session": False,
        "edit_format": edit_format,
    }
    _, user = render_blocks(phase.template, variables)
    assert "### Edit: path/to/existing.py" in user and "<<<<<<< SEARCH" in user
    assert "### File: path/to/module.py" in user
    assert ("may also replace an existing file whole" in user) == (edit_format == "whole")
