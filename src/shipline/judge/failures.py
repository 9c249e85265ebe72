"""Do new tests fail for the right reason? The tests phase's classifier of a red run (pure).

Right: failed assertions, errors raised by the code under test, and a test module that cannot
import a module *of this repository* (the behaviour is missing). Wrong: passing tests, a hang,
no test run, a test file that does not compile, an import of a package that is neither in the
repository nor installed, errors in fixtures or setup.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence

from shipline.judge.excerpt import FailureBlock, failure_excerpt, parse_pytest_log
from shipline.process import CommandResult

_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
_CANNOT_IMPORT = re.compile(r"cannot import name '\w+' from '([\w.]+)'")
_BROKEN_TEST_TYPES = ("SyntaxError", "IndentationError", "TabError")


def tests_command(template: str, files: Sequence[str]) -> str:
    """The tests command with `{files}` replaced by the shell-quoted new test files."""
    return template.replace("{files}", shlex.join(files))


def _missing_module(block: FailureBlock) -> str | None:
    """The module an ImportError/ModuleNotFoundError of this block names, or None."""
    for line in reversed(block.messages):
        found = _MISSING_MODULE.search(line) or _CANNOT_IMPORT.search(line)
        if found:
            return found.group(1)
    return None


def wrong_failure(
    result: CommandResult,
    timeout_s: float,
    in_repository: Callable[[str], bool],
    excerpt_chars: int,
) -> list[str]:
    """Objections when new tests do not fail for the right reason (empty: they do; see the
    module doc). `in_repository(name)`: whether a top-level module is the repository's own."""
    status = f"`{result.command}` exit {result.exit_code}"
    if result.timed_out:
        return [f"the new tests did not finish: {status} was killed after {timeout_s:g} s"]
    if result.exit_code == 0:
        return [f"the new tests already pass ({status}): they test nothing new"]
    parsed = parse_pytest_log(result.log)
    if not parsed.is_pytest:
        return []  # not pytest: a red run is all that can be asked
    excerpt = failure_excerpt(result.log, excerpt_chars)
    if parsed.summary.startswith("no tests ran") or result.exit_code in (4, 5):
        return [f"no test ran ({status}): check the test file names and paths\n{excerpt}"]
    objections = []
    for block in parsed.blocks:
        where = block.title.removeprefix("ERROR collecting ").strip()
        kind = block.exception_type
        if block.title.startswith("ERROR collecting"):
            module = _missing_module(block)
            if module is not None and in_repository(module.split(".")[0]):
                continue  # imports code that does not exist yet: missing behaviour
            if module is not None:
                objections.append(
                    f"{where} imports {module}, which is neither in the repository nor "
                    f"installed: use only the project and its dependencies\n{excerpt}"
                )
            else:
                objections.append(
                    f"{where} does not collect ({kind or 'collection error'}): fix the test "
                    f"file itself\n{excerpt}"
                )
        elif kind in _BROKEN_TEST_TYPES:
            objections.append(f"{where} fails with {kind}: fix the test itself\n{excerpt}")
        elif block.error_section:
            objections.append(
                f"{where} errors outside the test body ({kind or 'setup error'}), not on an "
                f"assertion: fix the fixture or setup\n{excerpt}"
            )
    return objections
