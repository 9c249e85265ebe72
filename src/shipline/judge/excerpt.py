"""Failure-focused excerpts of CI logs, for the `fix-ci` phase's prompt.

`failure_excerpt(log, budget_chars)` keeps what a fixer needs: the summary line, the names of
the failed tests, their assertion messages, and the last traceback in full. It drops the noise
(progress dots, session header, `collected` lines, the warnings summary). pytest logs are parsed;
any other log gets its error lines, its last Python traceback and its tail. The result never
exceeds the budget, and every cut is marked in the text. `parse_pytest_log` exposes the parse
(failed tests, collection errors, exception types) for phases that must tell a red test run that
fails "for the right reason" from one that does not even collect: each failure block's
traceback frames (`FailureBlock.frames`, in pytest's long, short or native style), its exception
line, and the test file it belongs to (`PytestLog.test_file`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_SECTION = re.compile(r"^(={3,}|!{3,}) (.*?) (?:={3,}|!{3,})$")
_BLOCK = re.compile(r"^_{3,} (.+?) _{3,}$")
_SUBSECTION = re.compile(r"^-{3,} (.+?) -{3,}$")
_OUTCOME_WORDS = r"(?:failed|passed|errors?|skipped|xfailed|xpassed|warnings?|deselected|rerun)"
_SUMMARY = re.compile(
    rf"^=*\s*((?:no tests ran|\d+ {_OUTCOME_WORDS})(?:, \d+ {_OUTCOME_WORDS})*"
    rf".*? in [\d.]+s.*?)\s*=*$"
)
_SHORT = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")
_LOCATION = re.compile(r"^(\S+?):(\d+): (\w[\w.]*)$")
_FRAME = re.compile(r"^(\S+?):(\d+):(?: .*)?$")  # long/short: `path:12: `, `path:12: in f`
_NATIVE_FRAME = re.compile(r'^\s*File "(.+?)", line (\d+)')  # --tb=native
_NATIVE_EXC = re.compile(r"^(\w[\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b)(?::|$)")
_EXC_LINE = re.compile(r"^E\s+(\w[\w.]*(?:Error|Exception|Exit|Interrupt|Warning)\b|\w+Error)")
_GENERIC_ERROR = re.compile(
    r"\b(error|errors|failed|failure|fatal|exception|panic|assert\w*|traceback)\b", re.IGNORECASE
)
_MARK = "[shipline: {n} {what} left out (budget)]"


@dataclass
class FailureBlock:
    """One entry of pytest's FAILURES or ERRORS section."""

    title: str  # test name (`test_math`, `TestX.test_y[1]`) or `ERROR collecting tests/x.py`
    lines: list[str]
    error_section: bool  # True: from ERRORS (setup/teardown/collection), not FAILURES

    @property
    def messages(self) -> list[str]:
        """The `E   …` lines: assertion messages and the exception."""
        return [line for line in self.lines if line.startswith("E ")]

    @property
    def location(self) -> str:
        """`path:line: ExceptionType` of the innermost frame, or ''."""
        for line in reversed(self.lines):
            if _LOCATION.match(line):
                return line
        return ""

    @property
    def exception_type(self) -> str:
        """The exception's type name from the location line or the last E line, or ''."""
        match = _LOCATION.match(self.location)
        if match:
            return match.group(3)
        for line in reversed(self.messages):
            exc = _EXC_LINE.match(line)
            if exc:
                return exc.group(1)
        for line in reversed(self.lines):  # --tb=native: the last line of a Python traceback
            native = _NATIVE_EXC.match(line)
            if native:
                return native.group(1)
        return ""

    @property
    def exception_message(self) -> str:
        """`Type: message` as the exception was printed (its first line), or ''."""
        kind = self.exception_type
        if not kind:
            return ""
        for line in reversed(self.lines):
            text = line[1:].strip() if line.startswith("E ") else line
            if text.startswith(f"{kind}:") or text == kind:
                return text
        return ""

    @property
    def frames(self) -> list[tuple[str, int]]:
        """(file, line) of each traceback frame, outermost first, as pytest printed the file."""
        found = []
        for line in self.lines:
            if _SUBSECTION.match(line):
                break  # captured output follows the traceback
            frame = _FRAME.match(line) or _NATIVE_FRAME.match(line)
            if frame:
                found.append((frame.group(1), int(frame.group(2))))
        return found


@dataclass
class PytestLog:
    """The parts of a pytest log that matter when it is red."""

    summary: str = ""  # `3 failed, 22 passed, 1 warning in 0.06s`
    failed: list[str] = field(default_factory=list)  # node ids from the short summary
    errors: list[str] = field(default_factory=list)  # ERROR node ids (setup or collection)
    short_lines: list[str] = field(default_factory=list)  # the short test summary lines
    blocks: list[FailureBlock] = field(default_factory=list)
    interrupted: str = ""  # `Interrupted: 1 error during collection`

    @property
    def is_pytest(self) -> bool:
        return bool(self.summary or self.blocks or self.short_lines or self.interrupted)

    def node_id(self, block: FailureBlock) -> str:
        """The node id (`tests/test_x.py::TestX::test_y`) of a FAILURES block, or its title."""
        for node in self.failed + self.errors:
            _, _, rest = node.partition("::")
            if rest and rest.replace("::", ".") == block.title:
                return node
        return block.title

    def test_file(self, block: FailureBlock) -> str:
        """The test file of a FAILURES block (from the short summary, else its first frame)."""
        node = self.node_id(block)
        if "::" in node:
            return node.partition("::")[0]
        frames = block.frames
        return frames[0][0] if frames else ""

    @property
    def collection_errors(self) -> list[FailureBlock]:
        return [b for b in self.blocks if b.title.startswith("ERROR collecting")]


def _clean(log: str) -> list[str]:
    return _ANSI.sub("", log).replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_pytest_log(log: str) -> PytestLog:
    """Split a pytest log (any verbosity) into summary, failed ids and failure blocks."""
    result = PytestLog()
    section = ""
    block: FailureBlock | None = None
    in_captured = False
    for line in _clean(log):
        summary = _SUMMARY.match(line)
        if summary:
            result.summary = summary.group(1)
            section, block = "", None
            continue
        header = _SECTION.match(line)
        if header:
            title = header.group(2).strip()
            if header.group(1).startswith("!"):
                result.interrupted = result.interrupted or title
            section, block = title.lower(), None
            continue
        if section in ("failures", "errors"):
            start = _BLOCK.match(line)
            if start:
                block = FailureBlock(start.group(1), [], section == "errors")
                result.blocks.append(block)
                in_captured = False
                continue
            sub = _SUBSECTION.match(line)
            if sub:
                # Captured output is kept (it may explain the failure) but marked as such.
                in_captured = sub.group(1).lower().startswith("captured")
            if block is not None and not (in_captured and not line.strip()):
                block.lines.append(line)
        elif section == "short test summary info":
            short = _SHORT.match(line)
            if short:
                result.short_lines.append(line)
                (result.failed if short.group(1) == "FAILED" else result.errors).append(
                    short.group(2)
                )
    for b in result.blocks:
        while b.lines and not b.lines[-1].strip():
            b.lines.pop()
        while b.lines and not b.lines[0].strip():
            b.lines.pop(0)
    return result


def _clip(text: str, budget: int) -> str:
    """Cut `text` to `budget` chars keeping its start, with a marker; '' when nothing fits."""
    if len(text) <= budget:
        return text
    marker = "\n[shipline: rest left out (budget)]"
    if budget <= len(marker):
        return text[:budget]
    return text[: budget - len(marker)] + marker


def _clip_keep_tail(lines: list[str], budget: int) -> str:
    """Keep the last lines of a traceback (where the error is) within `budget` chars."""
    text = "\n".join(lines)
    if len(text) <= budget:
        return text
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if size + len(line) + 1 > budget - 50:
            break
        kept.append(line)
        size += len(line) + 1
    omitted = len(lines) - len(kept)
    head = f"[shipline: first {omitted} lines left out (budget)]"
    return _clip("\n".join([head, *reversed(kept)]), budget)


def _split_captured(lines: list[str]) -> tuple[list[str], list[str]]:
    """A failure block's traceback, and its `--- Captured … ---` sections after it."""
    for i, line in enumerate(lines):
        sub = _SUBSECTION.match(line)
        if sub and sub.group(1).lower().startswith("captured"):
            return lines[:i], lines[i:]
    return lines, []


def _fit_lines(entries: list[str], budget: int, what: str) -> list[str]:
    """As many entries as fit in `budget`, then a marker saying how many were left out."""
    kept: list[str] = []
    used = 0
    for i, entry in enumerate(entries):
        marker = _MARK.format(n=len(entries) - i, what=what)
        rest_needs = len(marker) + 1 if i + 1 < len(entries) else 0
        if used + len(entry) + 1 + rest_needs > budget:
            if len(marker) + used <= budget or not kept:
                kept.append(marker)
            break
        kept.append(entry)
        used += len(entry) + 1
    return kept


def _pytest_excerpt(parsed: PytestLog, budget: int) -> str:
    """Summary and names (≤40 %), other failures' messages (≤25 %), the last traceback (rest)."""
    head_lines = []
    if parsed.summary:
        head_lines.append(f"pytest summary: {parsed.summary}")
    if parsed.interrupted:
        head_lines.append(f"pytest: {parsed.interrupted}")
    names = parsed.short_lines or [
        b.title
        if b.title.startswith("ERROR")
        else ("ERROR " if b.error_section else "FAILED ") + b.title
        for b in parsed.blocks
    ]
    if names:
        room = budget * 4 // 10 - sum(len(line) + 1 for line in head_lines) - len("failed:") - 1
        names = [name if len(name) <= 200 else name[:197] + "..." for name in names]
        if sum(len(name) + 1 for name in names) > room:  # ids only, without the messages
            names = [name.split(" - ", 1)[0] for name in names]
        head_lines += ["failed:", *_fit_lines(names, room, "more names")]
    head = "\n".join(head_lines)
    if not parsed.blocks:
        return _clip(head, budget)

    messages: list[str] = []
    for b in parsed.blocks[:-1]:
        msg = b.messages[:12] or _split_captured(b.lines)[0][-3:]
        where = f" ({b.location})" if b.location else ""
        messages.append("\n".join([f"--- {b.title}{where}", *msg]))
    middle = "\n".join(_fit_lines(messages, budget // 4, "failure messages")) if messages else ""

    last = parsed.blocks[-1]
    title = f"--- last failure, traceback: {last.title}"
    remaining = budget - len(head) - len(middle) - len(title) - 6
    traceback, captured = _split_captured(last.lines)
    tb_text = _clip_keep_tail(traceback, max(remaining, 0))
    room = remaining - len(tb_text) - 1
    if captured and room > 40:
        tb_text += "\n" + _clip("\n".join(captured), room)
    parts = [head, middle, f"{title}\n{tb_text}" if tb_text else ""]
    return _clip("\n\n".join(p for p in parts if p), budget)


def _last_python_traceback(lines: list[str]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call")]
    if not starts:
        return []
    start = starts[-1]
    for end in range(start + 1, len(lines)):
        line = lines[end]
        if line and not line[0].isspace():
            return lines[start : end + 1]
    return lines[start:]


def _generic_excerpt(lines: list[str], budget: int) -> str:
    while lines and not lines[-1].strip():
        lines.pop()
    tail = lines[-20:]
    tail_start = len(lines) - len(tail)
    traceback = _last_python_traceback(lines[:tail_start])
    errors = [
        f"{i + 1}: {line.strip()[:300]}"
        for i, line in enumerate(lines[:tail_start])
        if _GENERIC_ERROR.search(line)
    ]
    parts: list[str] = []
    tail_text = "--- end of log\n" + _clip_keep_tail(tail, max(budget // 2, 0))
    remaining = budget - len(tail_text) - 4
    if traceback and remaining > 0:
        tb = "--- last traceback\n" + _clip_keep_tail(traceback, remaining // 2)
        parts.append(tb)
        remaining -= len(tb) + 2
    if errors and remaining > 0:
        kept: list[str] = []
        size = len("--- error lines (line number: text)") + 1
        for line in reversed(errors):
            if size + len(line) + 1 > remaining:
                kept.append(_MARK.format(n=len(errors) - len(kept), what="earlier error lines"))
                break
            kept.append(line)
            size += len(line) + 1
        parts.insert(0, "--- error lines (line number: text)\n" + "\n".join(reversed(kept)))
    parts.append(tail_text)
    return _clip("\n\n".join(parts), budget)


def failure_excerpt(log: str, budget_chars: int) -> str:
    """A failure-focused excerpt of a CI log, at most `budget_chars` long."""
    if budget_chars <= 0:
        return ""
    parsed = parse_pytest_log(log)
    if parsed.is_pytest and (parsed.blocks or parsed.short_lines or parsed.interrupted):
        return _pytest_excerpt(parsed, budget_chars)
    lines = _clean(log)
    if parsed.summary:  # a green or empty pytest run: the summary is the whole story
        return _clip(f"pytest summary: {parsed.summary}", budget_chars)
    return _generic_excerpt(lines, budget_chars)
