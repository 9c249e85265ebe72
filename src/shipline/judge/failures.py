"""Do new tests fail for the right reason? The tests phase's classifier of a red run (pure).

Right: failed assertions, an expected exception that is not raised (`DID NOT RAISE`), errors
raised by the code under test, a name missing from a module *of this repository* (an import or
an attribute), a repository function called with arguments it does not accept yet, and a test
module that cannot import a module of this repository (the behaviour is missing). Wrong: passing
tests, a hang, no test run, a test file that does not compile, an import of a package that is
neither in the repository nor installed, errors in fixtures or setup, and the test's own bugs:
a `NameError`, `AttributeError` or `TypeError` raised in the test file itself (its innermost
frame inside the project is the test file) that the message pins on the test (`_own_fault`).
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
_NOT_DEFINED = re.compile(r"name '(\w+)' is not defined")
_UNBOUND = re.compile(r"local variable '(\w+)'")
_MODULE_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_OBJECT_ATTRIBUTE = re.compile(r"(?:type object |^)'([\w.]+)'(?: object)? has no attribute '(\w+)'")
_BAD_CALL = re.compile(
    r"^([\w.<>]+)\(\) (?:got an unexpected keyword|takes |missing \d|got multiple values"
    r"|got some positional-only)"
)
_LIBRARY_PATHS = ("site-packages", "dist-packages")


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


def _innermost_project_frame(frames: Sequence[tuple[str, int]], test_file: str) -> tuple[str, int]:
    """The innermost frame inside the project (not the standard library or an installed
    package), its file relative to the project root; ('', 0) when there is none."""
    root = ""
    for path, _ in frames:  # --tb=native prints absolute paths: find the root from the test file
        if test_file and path.endswith("/" + test_file):
            root = path[: -len(test_file)]
    for path, line in reversed(frames):
        relative = path[len(root) :] if root and path.startswith(root) else path
        if relative.startswith(("/", "<")) or any(p in relative for p in _LIBRARY_PATHS):
            continue
        return relative, line
    return "", 0


def _own_fault(
    kind: str, message: str, test_class: str, in_repository: Callable[[str], bool]
) -> str:
    """Why an exception raised in the test file is the test's own bug, or '' when it may come
    from the code under test (a missing name of a repository module, a repository function
    that does not accept the arguments yet, a value the code under test returned)."""
    text = message.removeprefix(f"{kind}:").strip()

    def tests_own(name: str) -> bool:
        head = name.split(".")[0]
        return head in (test_class, "TestCase") or head.startswith(("Test", "test_"))

    if kind == "NameError":
        found = _NOT_DEFINED.search(text)
        name = f"`{found.group(1)}`" if found else "a name"
        return f"the test uses {name}, which it never imports or defines"
    if kind == "UnboundLocalError":
        found = _UNBOUND.search(text)
        name = f"`{found.group(1)}`" if found else "a local variable"
        return f"the test reads {name} before assigning it"
    if kind == "AttributeError":
        module = _MODULE_ATTRIBUTE.search(text)
        if module:
            if in_repository(module.group(1).split(".")[0]):
                return ""  # a name missing from the repository's module: missing behaviour
            return (
                f"`{module.group(1)}` is not a module of this repository and has no "
                f"`{module.group(2)}`"
            )
        owner = _OBJECT_ATTRIBUTE.search(text)
        if owner and tests_own(owner.group(1)):
            return f"`{owner.group(1)}` is the test's own class, not code under test"
        return ""
    if kind == "TypeError":
        if text.startswith("'module' object is not callable"):
            return "the test calls a module as if it were a function: import the function"
        call = _BAD_CALL.match(text)
        if call and tests_own(call.group(1)):
            return f"`{call.group(1)}()` is the test's own function, called with wrong arguments"
    return ""


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
        elif kind in ("NameError", "UnboundLocalError", "AttributeError", "TypeError"):
            test_file = parsed.test_file(block)
            path, line = _innermost_project_frame(block.frames, test_file)
            if not path or path != test_file:
                continue  # raised by the code under test (or no frame to tell): right reason
            test_class = block.title.split(".")[0] if "." in block.title else ""
            message = block.exception_message or kind
            why = _own_fault(kind, message, test_class, in_repository)
            if why:
                objections.append(
                    f"{parsed.node_id(block)} fails with {message} raised in the test file "
                    f"itself ({path}:{line}), not by the code under test: {why}. That is the "
                    "test's own bug, and no implementation can make it pass: fix the test so "
                    f"that it fails only on the behaviour the ticket asks for\n{excerpt}"
                )
    return objections
