"""The built-in agent loop's tools, confined to one worktree.

read_file, write_file, edit (exact search-and-replace), list_dir, grep and run_command. No path
may leave the worktree, through `..` or a symlink; `.git` is off limits. run_command runs with a
timeout in its own process group, without the environment's secrets, and refuses network
commands on a configurable deny-list (curl, wget, ssh, nc, git push, …) and says why. The
deny-list is a guard rail against an agent's habits, not a sandbox: real isolation needs an OS
one (a container or a network namespace).

Every call returns a `ToolResult`: the text for the model, and a `ToolCallRecord` for the
transcript and the audit log: {name, args (secrets redacted), result_size, exit_code}.
Exit codes: 0 done; 1 the tool could not do it (the text says why); 124 timed out; 126 refused
by policy; other codes come from the command itself.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipline.process import run_command
from shipline.redact import redact, scrub_env
from shipline.sessions.base import ToolCallRecord
from shipline.workspaces.files import UnsafePathError, check_relative, resolve_inside

EXIT_OK = 0
EXIT_TOOL_ERROR = 1
EXIT_TIMEOUT = 124
EXIT_REFUSED = 126

DEFAULT_DENY: tuple[str, ...] = (
    "curl", "wget", "ssh", "scp", "sftp", "rsync", "nc", "ncat", "netcat", "telnet", "ftp",
    "socat", "git push", "git pull", "git fetch", "git clone", "git remote", "git ls-remote",
    "pip install", "pip3 install", "pip download", "npm install", "npm publish", "gh",
)  # fmt: skip
# Words that run the next word as a command: `sudo curl`, `env X=1 wget`, `timeout 5 nc`.
_WRAPPERS = {
    "sudo",
    "env",
    "command",
    "exec",
    "nohup",
    "time",
    "nice",
    "xargs",
    "timeout",
    "stdbuf",
}
_SHELLS = {"sh", "bash", "zsh", "dash", "ksh"}
_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "|&", ";;"}
_SKIP_DIRS = {".git", "node_modules", "__pycache__", ".venv", ".mypy_cache", ".ruff_cache"}


@dataclass(frozen=True)
class ToolResult:
    text: str
    exit_code: int
    record: ToolCallRecord

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_OK


class _ToolFailed(Exception):
    def __init__(self, message: str, exit_code: int = EXIT_TOOL_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- the command policy (pure) ----------------------------------------------------------------


def _simple_commands(command: str) -> list[list[str]]:
    """Split a shell line into simple commands' words, looking into `$( )`, backticks and
    `sh -c '…'`. Conservative: quoting it cannot parse yields the raw words."""
    text = command.replace("`", " ; ").replace("$(", " ; ( ").replace("\n", " ; ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes
        tokens = text.split()
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS or set(token) <= set(";&|()"):
            commands.append([])
        elif set(token) <= set("<>&0123456789") and token.strip("0123456789"):
            commands[-1].append("")  # a redirection operator: the next word is a file
        else:
            commands[-1].append(token)
    out: list[list[str]] = []
    for words in commands:
        words = [w for i, w in enumerate(words) if w and not (i and words[i - 1] == "")]
        if not words:
            continue
        out.append(words)
        program = _program(words)
        if program and Path(program[0]).name in _SHELLS and "-c" in program[1:]:
            script_at = program.index("-c") + 1
            if script_at < len(program):
                out.extend(_simple_commands(program[script_at]))
    return out


def _program(words: Sequence[str]) -> list[str]:
    """The words from the program on: past `FOO=1` assignments and wrappers such as sudo."""
    i = 0
    while i < len(words):
        word = words[i]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word):
            i += 1
        elif Path(word).name in _WRAPPERS:
            i += 1
            while i < len(words) and (
                words[i].startswith("-") or re.fullmatch(r"[\d.]+[smhd]?", words[i])
            ):
                i += 1
        elif re.fullmatch(r"python[\d.]*", Path(word).name) and "-m" in words[i + 1 : i + 3]:
            i = words.index("-m", i) + 1  # `python -m pip install` runs pip
        else:
            return list(words[i:])
    return []


def _operands(program: Sequence[str]) -> list[str]:
    """A program's subcommand words: options (and git's `-C dir`, `-c k=v`) skipped."""
    out = []
    skip = False
    for word in program[1:]:
        if skip:
            skip = False
        elif word in ("-C", "-c", "--git-dir", "--work-tree", "--namespace"):
            skip = True
        elif not word.startswith("-"):
            out.append(word)
    return out


def denied_by(command: str, deny: Iterable[str]) -> str | None:
    """The deny-list entry `command` matches, or None. Pure."""
    rules = [entry.split() for entry in deny if entry.strip()]
    for words in _simple_commands(command):
        program = _program(words)
        if not program:
            continue
        name = Path(program[0]).name
        operands = _operands(program)
        for rule in rules:
            if name == rule[0] and operands[: len(rule) - 1] == rule[1:]:
                return " ".join(rule)
    return None


# --- the tools --------------------------------------------------------------------------------


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[… {len(text) - limit} characters left out …]\n{text[-tail:]}"


@dataclass
class WorktreeTools:
    """The tools of one coding session, bound to one worktree."""

    root: Path
    command_timeout_s: float = 120.0
    deny: Sequence[str] = DEFAULT_DENY
    max_output_chars: int = 20_000
    env: Mapping[str, str] | None = None  # None: this process's environment, without secrets
    records: list[ToolCallRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()
        if not self.root.is_dir():
            raise UnsafePathError(f"worktree {self.root} does not exist")

    # each public tool: record, then return
    def _done(self, name: str, args: Mapping[str, Any], text: str, exit_code: int) -> ToolResult:
        text = _cut(text, self.max_output_chars)
        record = ToolCallRecord.of(name, args, len(text), exit_code)
        self.records.append(record)
        return ToolResult(text, exit_code, record)

    def _call(
        self, name: str, args: Mapping[str, Any], body: Callable[[], tuple[str, int]]
    ) -> ToolResult:
        try:
            text, code = body()
        except _ToolFailed as failed:
            text, code = f"error: {failed}", failed.exit_code
        except UnsafePathError as unsafe:
            text, code = f"refused: {unsafe}", EXIT_REFUSED
        except (OSError, UnicodeDecodeError) as error:
            text, code = f"error: {error}", EXIT_TOOL_ERROR
        return self._done(name, args, text, code)

    def _path(self, path: str) -> Path:
        return resolve_inside(self.root, path)

    def _rel(self, target: Path) -> str:
        return target.relative_to(self.root).as_posix() or "."

    def read_file(self, path: str, start_line: int = 1, end_line: int | None = None) -> ToolResult:
        """A file's text with line numbers (1-based, inclusive range)."""

        def body() -> tuple[str, int]:
            target = self._path(path)
            if not target.is_file():
                raise _ToolFailed(f"{path} is not a file")
            lines = target.read_text(encoding="utf-8").splitlines()
            first = max(start_line, 1)
            last = len(lines) if end_line is None else min(end_line, len(lines))
            shown = [f"{n:>5}  {lines[n - 1]}" for n in range(first, last + 1)]
            return "\n".join(shown) if shown else f"({path}: no lines in {first}..{last})", 0

        return self._call(
            "read_file", {"path": path, "start_line": start_line, "end_line": end_line}, body
        )

    def write_file(self, path: str, content: str) -> ToolResult:
        """Create or overwrite a file (parents are created)."""

        def body() -> tuple[str, int]:
            target = self._path(path)
            if target.is_dir():
                raise _ToolFailed(f"{path} is a directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w", encoding="utf-8", newline="") as handle:
                handle.write(content)
            return f"wrote {self._rel(target)} ({len(content)} characters)", 0

        return self._call("write_file", {"path": path, "content": content}, body)

    def edit(self, path: str, search: str, replace: str, replace_all: bool = False) -> ToolResult:
        """Replace an exact text. It must match once, unless `replace_all`; the count is said."""

        def body() -> tuple[str, int]:
            target = self._path(path)
            if not target.is_file():
                raise _ToolFailed(f"{path} is not a file")
            if not search:
                raise _ToolFailed("search text is empty")
            text = target.read_text(encoding="utf-8")
            count = text.count(search)
            if count == 0:
                raise _ToolFailed(
                    f"search text not found in {path} (0 matches); "
                    "read the file and copy the text exactly"
                )
            if count > 1 and not replace_all:
                raise _ToolFailed(
                    f"search text matches {count} times in {path}; include more context to make it "
                    "unique, or set replace_all"
                )
            with open(target, "w", encoding="utf-8", newline="") as handle:
                handle.write(text.replace(search, replace))
            return f"replaced {count} of {count} match{'es' if count > 1 else ''} in {path}", 0

        args = {"path": path, "search": search, "replace": replace, "replace_all": replace_all}
        return self._call("edit", args, body)

    def list_dir(self, path: str = ".") -> ToolResult:
        """A directory's entries: directories end in `/`, symlinks show their target."""

        def body() -> tuple[str, int]:
            target = self.root if path in ("", ".") else self._path(path)
            if not target.is_dir():
                raise _ToolFailed(f"{path} is not a directory")
            lines = []
            for entry in sorted(target.iterdir(), key=lambda p: p.name):
                if entry.name == ".git":
                    continue
                if entry.is_symlink():
                    lines.append(f"{entry.name} -> {os.readlink(entry)}")
                else:
                    lines.append(entry.name + ("/" if entry.is_dir() else ""))
            return "\n".join(lines) if lines else "(empty)", 0

        return self._call("list_dir", {"path": path}, body)

    def grep(self, pattern: str, path: str = ".", max_matches: int = 200) -> ToolResult:
        """Lines matching a Python regular expression, as `path:line: text`."""

        def body() -> tuple[str, int]:
            try:
                regex = re.compile(pattern)
            except re.error as error:
                raise _ToolFailed(f"bad regular expression {pattern!r}: {error}") from None
            target = self.root if path in ("", ".") else self._path(path)
            files = [target] if target.is_file() else self._walk(target)
            hits: list[str] = []
            for file in files:
                try:
                    data = file.read_bytes()
                except OSError:
                    continue
                if b"\0" in data[:8192]:
                    continue  # binary
                for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
                    if regex.search(line):
                        hits.append(f"{self._rel(file)}:{number}: {line[:300]}")
                        if len(hits) >= max_matches:
                            hits.append(
                                f"[stopped at {max_matches} matches; narrow the pattern or path]"
                            )
                            return "\n".join(hits), 0
            return ("\n".join(hits), 0) if hits else ("no matches", 1)

        return self._call("grep", {"pattern": pattern, "path": path}, body)

    def _walk(self, top: Path) -> list[Path]:
        files = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                file = Path(dirpath, name)
                if file.is_symlink():
                    try:
                        resolve_inside(self.root, self._rel(file))
                    except UnsafePathError:
                        continue
                files.append(file)
        return files

    def run_command(self, command: str, timeout_s: float | None = None) -> ToolResult:
        """Run a shell command in the worktree: timeout, process-group kill, no network."""

        def body() -> tuple[str, int]:
            rule = denied_by(command, self.deny)
            if rule is not None:
                raise _ToolFailed(
                    f"`{rule}` is not allowed in a coding session: it reaches the network, and "
                    "sessions work offline in their worktree. Work with the files here; "
                    "dependencies are installed by the repository's setup commands",
                    EXIT_REFUSED,
                )
            timeout = min(timeout_s or self.command_timeout_s, self.command_timeout_s)
            env = dict(self.env) if self.env is not None else scrub_env(os.environ)
            result = run_command(
                command, self.root, timeout, env, max_log_chars=self.max_output_chars
            )
            text = redact(result.log)
            if result.timed_out:
                return (
                    text + f"\n[timed out after {timeout:g} s; the command was killed]",
                    EXIT_TIMEOUT,
                )
            return text + f"\n[exit {result.exit_code}]", result.exit_code

        args: dict[str, Any] = {"command": command}
        if timeout_s is not None:
            args["timeout_s"] = timeout_s
        return self._call("run_command", args, body)

    def call(self, name: str, args: Mapping[str, Any]) -> ToolResult:
        """Dispatch a model's tool call by name; unknown tools and bad arguments are results."""
        tools: dict[str, Callable[..., ToolResult]] = {
            "read_file": self.read_file,
            "write_file": self.write_file,
            "edit": self.edit,
            "list_dir": self.list_dir,
            "grep": self.grep,
            "run_command": self.run_command,
        }
        tool = tools.get(name)
        if tool is None:
            return self._done(
                name,
                args,
                f"error: unknown tool {name!r}; tools: {', '.join(tools)}",
                EXIT_TOOL_ERROR,
            )
        try:
            return tool(**args)
        except TypeError as error:
            return self._done(
                name, args, f"error: bad arguments for {name}: {error}", EXIT_TOOL_ERROR
            )


def _spec(
    name: str, description: str, required: list[str], **props: dict[str, Any]
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": props, "required": required},
    }


_STR = {"type": "string"}
_INT = {"type": "integer"}
TOOL_SPECS: list[dict[str, Any]] = [
    _spec("read_file", "Read a file of the worktree, with line numbers.", ["path"],
          path=_STR, start_line=_INT, end_line=_INT),
    _spec("write_file", "Create or overwrite a file of the worktree.", ["path", "content"],
          path=_STR, content=_STR),
    _spec("edit", "Replace an exact text in a file; it must match once unless replace_all.",
          ["path", "search", "replace"], path=_STR, search=_STR, replace=_STR,
          replace_all={"type": "boolean"}),
    _spec("list_dir", "List a directory of the worktree.", [], path=_STR),
    _spec("grep", "Search files for a regular expression.", ["pattern"], pattern=_STR, path=_STR,
          max_matches=_INT),
    _spec("run_command", "Run a shell command in the worktree (timeout, no network).",
          ["command"], command=_STR, timeout_s={"type": "number"}),
]  # fmt: skip
"""JSON-schema tool descriptions, for providers that take tool definitions."""

__all__ = [
    "DEFAULT_DENY",
    "TOOL_SPECS",
    "ToolResult",
    "WorktreeTools",
    "check_relative",
    "denied_by",
]
