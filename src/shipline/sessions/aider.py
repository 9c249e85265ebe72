"""Aider as a session runner: `aider --message TASK`, its chat history as the session.

Aider answers yes to its own questions (`--yes-always`), edits files but runs no shell command
(`--no-suggest-shell-commands`), and commits nothing, neither its edits nor a dirty tree
(`--no-auto-commits --no-dirty-commits`): shipline commits. It leaves `.gitignore` alone
(`--no-gitignore`). Aider has no session id: the session is its chat history,
kept per shipline session id in the worktree's private git dir (`<git-dir>/shipline-aider/`,
never committed; the worktree itself when it is no git repository), and a resumed run restores
it (`--restore-chat-history`). Aider writes plain text, no JSON: each model call prints
`Tokens: 2.3k sent, 1.1k cache hit, 440 received. Cost: $0.0061 message, $0.0194 session.`
(counts over 1,000 rounded to 0.1k), and each edit `Applied edit to PATH`. The last message is
read from the chat history, where the user's lines start with `#### ` and aider's notes with
`> `.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from pathlib import Path

from shipline.sessions.base import AgentCall, AgentKind, AgentReport, UnparsableOutput
from shipline.workspaces.git import Git, WorkspaceError

_NON_INTERACTIVE = (
    "--yes-always",
    "--no-auto-commits",
    "--no-dirty-commits",
    "--no-gitignore",
    "--no-suggest-shell-commands",
    "--no-pretty",
    "--no-stream",
    "--no-fancy-input",
    "--no-check-update",
    "--no-show-release-notes",
    "--no-analytics",
)
_COUNT = r"([\d.,]+k?)"
_TOKENS = re.compile(
    rf"Tokens: {_COUNT} sent(?:, {_COUNT} cache write)?(?:, {_COUNT} cache hit)?, "
    rf"{_COUNT} received\.(?: Cost: \$([\d.]+) message, \$([\d.]+) session\.)?"
)
_APPLIED = re.compile(r"^Applied edit to (.+?)\s*$")
_BANNER = re.compile(r"^Aider v\d")
_NOTE = re.compile(r"^>( |$)")  # not `>>>>>>> REPLACE`, the end of an edit block


def history_files(call: AgentCall) -> tuple[Path, Path]:
    """The session's chat history and input history files."""
    try:
        found = Git(call.workdir).run("rev-parse", "--absolute-git-dir", check=False)
    except WorkspaceError:  # no git, or no such directory
        found = None
    if found is not None and found.returncode == 0 and found.stdout.strip():
        folder = Path(found.stdout.strip()) / "shipline-aider"
        return folder / f"{call.session_id}.chat.md", folder / f"{call.session_id}.input"
    return (
        call.workdir / f".aider.shipline-{call.session_id}.chat.history.md",
        call.workdir / f".aider.shipline-{call.session_id}.input.history",
    )


def arguments(call: AgentCall) -> list[str]:
    chat, inputs = history_files(call)
    chat.parent.mkdir(parents=True, exist_ok=True)
    model = ["--model", call.settings.model] if call.settings.model else []
    restore = ["--restore-chat-history"] if call.resume else []
    return [
        f"--message={call.task}",
        *_NON_INTERACTIVE,
        f"--chat-history-file={chat}",
        f"--input-history-file={inputs}",
        *restore,
        *model,
        *call.settings.args,
    ]


def parse(lines: Iterable[str], call: AgentCall | None = None) -> AgentReport:
    """Read aider's output, and the chat history for the last message."""
    history = ""
    if call is not None:
        with contextlib.suppress(OSError):
            history = history_files(call)[0].read_text(encoding="utf-8", errors="replace")
    report = parse_output(lines, history)
    if call is not None:
        report.session_id = call.session_id
    return report


def parse_output(lines: Iterable[str], history: str = "") -> AgentReport:
    """Pure: aider's stdout+stderr and its chat history markdown, to a report."""
    report = AgentReport(final_text=last_message(history))
    seen = False
    for line in lines:
        line = line.strip()
        seen = seen or bool(_BANNER.match(line))
        if applied := _APPLIED.match(line):
            report.record("edit", {"path": applied.group(1)}, 0, 0)
        elif tokens := _TOKENS.search(line):
            seen = True
            sent, _, hit, received, _, session = tokens.groups()
            report.input_tokens = (report.input_tokens or 0) + _count(sent)
            report.output_tokens = (report.output_tokens or 0) + _count(received)
            report.cached_tokens += _count(hit) if hit else 0
            report.cost = float(session) if session else report.cost
            report.steps += 1  # one line a model call
    if not seen:
        raise UnparsableOutput("no aider banner or token report in the output")
    return report


def last_message(history: str) -> str:
    """Aider's last reply in a chat history: after the last `#### ` (user) line, the last run
    of lines that are not `> ` notes (tool output)."""
    lines = history.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("#### ")]
    if not starts:
        return ""
    blocks: list[list[str]] = [[]]
    for line in lines[starts[-1] + 1 :]:
        if _NOTE.match(line):
            blocks.append([])
        else:
            blocks[-1].append(line)
    texts = ["\n".join(block).strip() for block in blocks]
    return next((text for text in reversed(texts) if text), "")


def _count(text: str) -> int:
    """`1,234` or `2.3k` (aider rounds counts over 1,000) to an int."""
    text = text.replace(",", "")
    if text.endswith("k"):
        return round(float(text[:-1]) * 1000)
    return int(float(text))


KIND = AgentKind(binary="aider", vendor="", arguments=arguments, parse=parse)
