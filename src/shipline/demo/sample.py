"""The demo's sample repository (a tiny `greet` package) and the three tickets run against it.

`write_sample_repo` only writes files; the caller initialises git and commits. The scripted
answers for these tickets are in `replay.yaml`, next to this module.
"""

from __future__ import annotations

from pathlib import Path

REPLAY_SCRIPT = Path(__file__).with_name("replay.yaml")

SAMPLE_FILES: dict[str, str] = {
    "greet/__init__.py": '''\
"""Greetings for people, by name."""


def greet(name: str) -> str:
    """The greeting for `name`."""
    return f"Hello, {name}!"
''',
    "greet/cli.py": '''\
"""Command line: `python -m greet.cli NAME` prints the greeting for NAME."""

from __future__ import annotations

import argparse

from greet import greet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="greet", description="Print a greeting.")
    parser.add_argument("name", help="who to greet")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print(greet(args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
''',
    "tests/test_greet.py": """\
from greet import greet
from greet.cli import main


def test_greet_includes_the_name():
    assert greet("Ada") == "Hello, Ada!"


def test_cli_prints_the_greeting(capsys):
    assert main(["Ada"]) == 0
    assert capsys.readouterr().out == "Hello, Ada!\\n"
""",
    "pyproject.toml": """\
[project]
name = "greet"
version = "0.1.0"
description = "Print a greeting."
requires-python = ">=3.10"

[tool.pytest.ini_options]
pythonpath = ["."]
testpaths = ["tests"]
""",
    "README.md": """\
# greet

Prints a greeting.

    python -m greet.cli Ada      # Hello, Ada!

Run the tests with `python -m pytest`.
""",
}

DEMO_TICKETS: list[dict[str, str]] = [
    {
        "kind": "feature",
        "title": "Add a --shout flag to greet",
        "body": (
            "Users want a louder greeting. `python -m greet.cli Ada --shout` should print the "
            "greeting in upper case (`HELLO, ADA!`). Without the flag, the output must stay "
            "exactly as it is today, and `--help` should list the new flag."
        ),
    },
    {
        "kind": "hotfix",
        "title": "greet crashes on an empty name",
        "body": (
            '`greet("")` returns `"Hello, !"` instead of failing, and the CLI happily '
            "prints it: a script that reads the name from an unset variable sends customers "
            "a broken greeting.\n\n"
            "Reproduction:\n\n"
            "    $ python -c 'from greet import greet; print(greet(\"\"))'\n"
            "    Hello, !\n"
            '    $ python -m greet.cli "   "\n'
            "    Hello,    !\n\n"
            'Expected: `greet` raises `ValueError("name must not be empty")` when the name '
            "is empty or only whitespace, so callers find out at once. Seen on main; "
            "every version since 0.1.0 is affected."
        ),
    },
    {
        "kind": "epic",
        "title": "Localise greetings",
        "body": (
            "Our users in France and Spain want to be greeted in their language. Add French "
            "(`Bonjour, Ada !`) and Spanish (`¡Hola, Ada!`) greetings next to English, and a "
            "`--lang` option on the command line to choose one (`en`, `fr` or `es`; English "
            "stays the default). An unsupported language must be refused with a message that "
            "lists the supported ones."
        ),
    },
]


def write_sample_repo(path: Path) -> None:
    """Write the sample `greet` package (code, tests, pyproject, README) under `path`.

    Creates `path` if needed and overwrites these files; it runs no git command.
    """
    for relative, content in SAMPLE_FILES.items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
