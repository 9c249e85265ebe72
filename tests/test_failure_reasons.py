"""Do new tests fail for the right reason? `wrong_failure` on real pytest logs, both sides.

One real pytest run per traceback style on a tiny repository (`greet/`) and a test file whose
tests each fail one way; every row of the table names a test and whether its failure is the
test's own bug (an objection) or missing behaviour of the code under test (accepted).
"""

from __future__ import annotations

import os
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import demo_ticket, git
from shipline.judge import run_judge
from shipline.judge.excerpt import parse_pytest_log
from shipline.judge.failures import wrong_failure
from shipline.process import CommandResult
from test_workspaces_e2e import attempts, rows, sample_project

_GREET = """
def greet(name):
    return _polite(name)


def _polite(name):
    return "Hello, " + name


class Greeter:
    def hi(self):
        return undefined_in_the_repository


def stub():
    return None
"""

_TESTS = """
import unittest

import pytest

import greet as greet_module
from greet import Greeter, greet, stub


def test_failed_assertion():
    assert greet("Ada") == "Hi, Ada"


def test_did_not_raise():
    with pytest.raises(ValueError):
        greet("")


def test_keyword_the_function_does_not_take_yet():
    assert greet("Ada", shout=True) == "HELLO, ADA"


def test_positional_the_function_does_not_take_yet():
    assert greet("Ada", "fr") == "Bonjour, Ada"


def test_attribute_missing_from_the_repository_module():
    assert greet_module.shout("Ada") == "HELLO, ADA"


def test_attribute_missing_from_a_repository_object():
    assert Greeter().shout() == "HELLO"


def test_repository_code_raises_type_error():
    assert greet(3) == "Hello, 3"


def test_repository_code_raises_name_error():
    assert Greeter().hi() == "hi"


def test_value_returned_by_the_code_under_test():
    assert stub()["name"] == "Ada"


def test_typo_in_a_helper_name():
    asert_equal(greet("Ada"), "Hi")


def test_misspelled_local():
    naem = greet("Ada")
    assert name == "Hello, Ada"


def test_unbound_local():
    if greet("Ada") == "nope":
        result = 1
    assert result == 1


def test_attribute_missing_from_a_library_module():
    with pytest.raise_(ValueError):
        greet("")


def test_module_called_as_a_function():
    assert greet_module("Ada") == "Hello, Ada"


class TestGreeter:
    def helper(self, value):
        return value

    def test_own_attribute(self):
        assert self.nope == greet("Ada")

    def test_own_helper_called_wrong(self):
        assert self.helper(greet("Ada"), 2) == "Hello, Ada"


class GreetCase(unittest.TestCase):
    def test_assert_equal_called_wrong(self):
        self.assertEqual(greet("Ada"))
"""

# test id → the reason its failure is the test's own bug (a phrase of the objection), or None
# when it fails for the right reason (the code under test lacks the behaviour)
CASES: dict[str, str | None] = {
    "test_failed_assertion": None,
    "test_did_not_raise": None,
    "test_keyword_the_function_does_not_take_yet": None,
    "test_positional_the_function_does_not_take_yet": None,
    "test_attribute_missing_from_the_repository_module": None,
    "test_attribute_missing_from_a_repository_object": None,
    "test_repository_code_raises_type_error": None,
    "test_repository_code_raises_name_error": None,
    "test_value_returned_by_the_code_under_test": None,
    "test_typo_in_a_helper_name": "the test uses `asert_equal`, which it never imports or defines",
    "test_misspelled_local": "the test uses `name`, which it never imports or defines",
    "test_unbound_local": "the test reads `result` before assigning it",
    "test_attribute_missing_from_a_library_module": (
        "`pytest` is not a module of this repository and has no `raise_`"
    ),
    "test_module_called_as_a_function": "the test calls a module as if it were a function",
    "TestGreeter::test_own_attribute": "`TestGreeter` is the test's own class",
    "TestGreeter::test_own_helper_called_wrong": (
        "`TestGreeter.helper()` is the test's own function, called with wrong arguments"
    ),
    "GreetCase::test_assert_equal_called_wrong": (
        "`TestCase.assertEqual()` is the test's own function, called with wrong arguments"
    ),
}

STYLES = ("auto", "short", "native")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[CommandResult, Path]]:
    """Real pytest on the tiny repository, once per traceback style."""
    root = tmp_path_factory.mktemp("repo")
    (root / "greet").mkdir()
    (root / "greet" / "__init__.py").write_text(textwrap.dedent(_GREET))
    (root / "tests").mkdir()
    (root / "tests" / "test_new.py").write_text(textwrap.dedent(_TESTS))
    base = f"{sys.executable} -m pytest -q -p no:cacheprovider tests/test_new.py"
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    with ThreadPoolExecutor(len(STYLES)) as pool:
        futures = {
            style: pool.submit(run_judge, f"{base} --tb={style}", root, 60, env) for style in STYLES
        }
        results = {style: future.result() for style, future in futures.items()}
    for result in results.values():
        assert result.exit_code == 1, result.log
    return {style: (result, root) for style, result in results.items()}


def objections_of(run: tuple[CommandResult, Path]) -> list[str]:
    result, root = run
    return wrong_failure(result, 60, lambda name: (root / name).exists(), 4000)


@pytest.mark.parametrize("style", STYLES)
def test_every_case_fails_on_its_own_line_of_the_log(
    runs: dict[str, tuple[CommandResult, Path]], style: str
) -> None:
    parsed = parse_pytest_log(runs[style][0].log)
    assert sorted(parsed.failed) == sorted(f"tests/test_new.py::{case}" for case in CASES)
    for block in parsed.blocks:
        assert parsed.test_file(block) == "tests/test_new.py"
        assert block.frames, block.title


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("case", CASES)
def test_a_failure_is_the_tests_own_bug_only_when_raised_by_the_test_itself(
    runs: dict[str, tuple[CommandResult, Path]], style: str, case: str
) -> None:
    objections = objections_of(runs[style])
    mine = [o for o in objections if o.startswith(f"tests/test_new.py::{case} fails with ")]
    why = CASES[case]
    if why is None:
        assert mine == [], mine
    else:
        assert len(mine) == 1, objections
        first_line = mine[0].split("\n", 1)[0]
        assert why in first_line
        assert "raised in the test file itself (tests/test_new.py:" in first_line
        assert "no implementation can make it pass: fix the test" in first_line


def test_the_objection_names_the_test_the_exception_and_the_fix(
    runs: dict[str, tuple[CommandResult, Path]],
) -> None:
    objections = objections_of(runs["auto"])
    (typo,) = [o for o in objections if "test_typo_in_a_helper_name" in o.split("\n")[0]]
    line = typo.split("\n", 1)[0]
    assert line.startswith(
        "tests/test_new.py::test_typo_in_a_helper_name fails with NameError: name "
        "'asert_equal' is not defined raised in the test file itself (tests/test_new.py:"
    )
    assert line.endswith(
        "not by the code under test: the test uses `asert_equal`, which it never imports or "
        "defines. That is the test's own bug, and no implementation can make it pass: fix the "
        "test so that it fails only on the behaviour the ticket asks for"
    )
    assert "pytest summary:" in typo  # the excerpt of the log follows


def test_a_run_with_only_right_reasons_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "greet").mkdir()
    (tmp_path / "greet" / "__init__.py").write_text(textwrap.dedent(_GREET))
    (tmp_path / "test_new.py").write_text(
        "from greet import greet\n\n"
        "def test_keyword():\n    assert greet('Ada', shout=True) == 'HELLO, ADA'\n\n"
        "def test_assertion():\n    assert greet('Ada') == 'Hi'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = f"{sys.executable} -m pytest -q -p no:cacheprovider test_new.py"
    result = run_judge(command, tmp_path, 60, env)
    assert result.exit_code == 1, result.log
    assert wrong_failure(result, 60, lambda name: (tmp_path / name).exists(), 4000) == []


TYPO_TESTS = """### File: tests/test_empty_name.py
```python
import pytest

from greet import greet


def test_greet_rejects_an_empty_name():
    with pytest.raises(ValueError, match="must not be empty"):
        greet(emtpy_name)
```
"""


@pytest.mark.slow
def test_a_tests_attempt_with_a_typo_is_rejected_and_the_next_one_is_locked(
    tmp_path: Path,
) -> None:
    typo = {
        "phase": "tests",
        "role": "producer",
        "title": "empty name",
        "attempt": 1,
        "reply": TYPO_TESTS,
    }
    project = sample_project(tmp_path / "repo", rules=[typo])
    hotfix = demo_ticket("hotfix")
    ticket_id = project.add("hotfix", hotfix["title"], hotfix["body"])
    project.cli("run")
    detail = project.show(ticket_id)
    assert detail["status"] == "done", detail["handoff_reason"]
    tests = attempts(detail, "tests")
    assert [a["verdict"]["passed"] for a in tests] == [False, True]
    objection = tests[0]["verdict"]["objections"][0]
    assert objection.startswith(
        "tests/test_empty_name.py::test_greet_rejects_an_empty_name fails with NameError: "
        "name 'emtpy_name' is not defined raised in the test file itself "
        "(tests/test_empty_name.py:8), not by the code under test: the test uses "
        "`emtpy_name`, which it never imports or defines."
    )
    locks = rows(project, "SELECT path FROM test_locks WHERE ticket_id = ?", ticket_id)
    assert locks == [("tests/test_empty_name.py",)]
    locked = git(project.root, "show", "main:tests/test_empty_name.py")
    assert "emtpy_name" not in locked and "must not be empty" in locked
