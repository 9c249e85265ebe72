"""Parse the markdown that phases produce: `## ` sections, R1/D1 ids, tables, file and edit
blocks.

Every function here is pure. The phase checks build their objections from these results;
the engine uses `parse_changes` to apply a deliverable's files and edits to the ticket's
worktree (workspaces/edits.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_FENCE = re.compile(r"^\s{0,3}(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_SECTION = re.compile(r"^##\s+(?P<title>.+?)\s*#*\s*$")
_BLOCK_HEADING = re.compile(
    r"^\s{0,3}(?:#{1,6}\s*)?(?:\*\*|__)?(?P<kind>File|Edit):(?:\*\*|__)?\s*"
    r"(?P<path>.*?)\s*(?:\*\*|__)?\s*$",
    re.IGNORECASE,
)
# The three marker lines of a SEARCH/REPLACE block, exactly (trailing spaces aside).
_SEARCH = re.compile(r"^<{7} SEARCH\s*$")
_DIVIDER = re.compile(r"^={7}\s*$")
_REPLACE = re.compile(r"^>{7} REPLACE\s*$")


def _norm_title(title: str) -> str:
    """`## Root Cause:` and `## root cause` name the same section."""
    return " ".join(title.strip().strip(":").strip("*_` ").split()).lower()


def _lines_outside_fences(text: str) -> list[tuple[str, bool]]:
    """Each line with a flag saying whether it lies inside (or is) a code fence."""
    result: list[tuple[str, bool]] = []
    fence: str | None = None
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group("fence")
                result.append((line, True))
            else:
                result.append((line, False))
        else:
            result.append((line, True))
            stripped = line.strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                fence = None
    return result


def sections(text: str) -> dict[str, str]:
    """The `## ` sections of `text`, keyed by normalised title (lower case), in order.

    Text before the first `## ` heading is ignored; `###` and deeper stay inside their
    section; a `## ` line inside a code fence is content. A repeated title keeps the first.
    """
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line, fenced in _lines_outside_fences(text):
        match = None if fenced else _SECTION.match(line)
        if match:
            title = _norm_title(match.group("title"))
            # A repeated section is not merged into the first one.
            current = None if title in found else found.setdefault(title, [])
            continue
        if current is not None:
            current.append(line)
    return {title: "\n".join(body).strip("\n") for title, body in found.items()}


def section(text: str, title: str) -> str | None:
    """The body of the `## title` section (case-insensitive), or None when it is absent."""
    return sections(text).get(_norm_title(title))


def missing_sections(text: str, deliverable: str, titles: tuple[str, ...]) -> list[str]:
    """One objection per required `## ` section that `text` lacks."""
    present = sections(text)
    return [
        f"{deliverable} is missing the section '## {title}'"
        for title in titles
        if _norm_title(title) not in present
    ]


def empty_sections(text: str, deliverable: str, titles: tuple[str, ...]) -> list[str]:
    """One objection per required `## ` section that is present but has no content."""
    present = sections(text)
    return [
        f"{deliverable} has an empty section '## {title}'"
        for title in titles
        if _norm_title(title) in present and not present[_norm_title(title)].strip()
    ]


@dataclass(frozen=True)
class IdDefinition:
    """One defined id (`R3`, `D1`) and the block of text that belongs to it."""

    id: str
    number: int
    block: str  # the definition line and every line up to the next definition


def _definition_pattern(prefix: str) -> re.Pattern[str]:
    # `- **R1**: text`, `- R1: text`, `1. R1 text`, `### R1 text`, `**R1.** text`, `[R1] text`.
    # At most one space of indent, so nested bullets that merely mention an id are not
    # definitions.
    return re.compile(
        r"^ ?(?:[-*+]\s+|\d+[.)]\s+|#{3,6}\s+)?"
        r"(?P<mark>\*\*|__|`)?\[?"
        rf"(?P<id>{re.escape(prefix)}(?P<number>\d+))"
        r"\]?[:.]?(?P=mark)?(?=[\s:.)(\u2014-]|$)"
    )


def id_definitions(text: str, prefix: str) -> list[IdDefinition]:
    """Ids with `prefix` defined at the start of a line, in order, duplicates included."""
    pattern = _definition_pattern(prefix)
    found: list[IdDefinition] = []
    start_line: list[int] = []
    lines = text.splitlines()
    for index, (line, fenced) in enumerate(_lines_outside_fences(text)):
        match = None if fenced else pattern.match(line)
        if match:
            found.append(IdDefinition(match.group("id"), int(match.group("number")), ""))
            start_line.append(index)
    blocks: list[IdDefinition] = []
    for position, definition in enumerate(found):
        end = start_line[position + 1] if position + 1 < len(found) else len(lines)
        block = "\n".join(lines[start_line[position] : end]).strip()
        blocks.append(IdDefinition(definition.id, definition.number, block))
    return blocks


def numbering_objections(
    definitions: list[IdDefinition], prefix: str, deliverable: str, what: str
) -> list[str]:
    """Ids must be unique and numbered from `prefix`1 without gaps."""
    objections: list[str] = []
    seen: set[int] = set()
    for definition in definitions:
        if definition.number in seen:
            objections.append(f"{definition.id} is defined twice in {deliverable}")
        seen.add(definition.number)
    if seen:
        missing = [n for n in range(1, max(seen) + 1) if n not in seen]
        if missing:
            names = ", ".join(f"{prefix}{n}" for n in missing)
            objections.append(
                f"{deliverable} skips {names}: number {what} {prefix}1, {prefix}2, … without gaps"
            )
    return objections


def cited_ids(text: str, prefix: str, *, ignore_case: bool = False) -> set[str]:
    """Every `prefix`N mentioned in `text`, normalised to upper case (`r2` → `R2`).

    A letter or digit right before the prefix, or a digit right after the number, means it
    is part of another word (`FOR1`, `R12`); underscores are allowed, so `test_r1_x` cites R1.
    """
    flags = re.IGNORECASE if ignore_case else 0
    pattern = re.compile(rf"(?<![A-Za-z0-9]){re.escape(prefix)}(\d+)(?![0-9])", flags)
    return {f"{prefix.upper()}{int(number)}" for number in pattern.findall(text)}


def id_sort_key(identifier: str) -> tuple[str, int]:
    """Sort `R2` before `R10`."""
    match = re.match(r"([A-Za-z]+)(\d+)$", identifier)
    if not match:
        return (identifier, 0)
    return (match.group(1), int(match.group(2)))


def defined_ids(text: str, section_title: str, prefix: str) -> list[str]:
    """The unique ids defined in the `## section_title` section, in id order."""
    body = section(text, section_title)
    if body is None:
        return []
    unique = {definition.id for definition in id_definitions(body, prefix)}
    return sorted(unique, key=id_sort_key)


@dataclass(frozen=True)
class Table:
    """A markdown table: normalised (lower case) headers and one dict per row."""

    headers: tuple[str, ...]
    rows: tuple[dict[str, str], ...]


_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{1,}:?\s*(?:\|\s*:?-{1,}:?\s*)*\|?\s*$")


def _cells(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        stripped = stripped[1:]
    if stripped.endswith("|") and not stripped.endswith("\\|"):
        stripped = stripped[:-1]
    cells = re.split(r"(?<!\\)\|", stripped)
    return [_plain(cell.replace("\\|", "|")) for cell in cells]


def _plain(cell: str) -> str:
    """A cell without surrounding whitespace, emphasis or backticks."""
    return cell.strip().strip("*_`").strip()


def tables(text: str) -> list[Table]:
    """Every pipe table in `text` (header row, separator row, body rows), in order."""
    found: list[Table] = []
    lines = [line for line, _ in _lines_outside_fences(text)]
    fenced = [flag for _, flag in _lines_outside_fences(text)]
    index = 0
    while index + 1 < len(lines):
        header, separator = lines[index], lines[index + 1]
        if (
            not fenced[index]
            and "|" in header
            and "|" in separator
            and _TABLE_SEPARATOR.match(separator)
        ):
            headers = tuple(cell.lower() for cell in _cells(header))
            rows: list[dict[str, str]] = []
            index += 2
            while index < len(lines) and "|" in lines[index] and lines[index].strip():
                values = _cells(lines[index])
                rows.append(
                    {h: (values[i] if i < len(values) else "") for i, h in enumerate(headers)}
                )
                index += 1
            found.append(Table(headers, tuple(rows)))
            continue
        index += 1
    return found


def ordered_list_items(text: str) -> list[str]:
    """The items of ordered lists (`1. step`, `2) step`) in `text`, continuation lines kept."""
    items: list[list[str]] = []
    item_start = re.compile(r"^\s{0,3}\d+[.)]\s+(?P<rest>.*)$")
    for line, fenced in _lines_outside_fences(text):
        match = None if fenced else item_start.match(line)
        if match:
            items.append([match.group("rest")])
        elif items and (line.startswith((" ", "\t")) or fenced) and line.strip():
            items[-1].append(line.strip())
    return ["\n".join(item).strip() for item in items if item]


@dataclass(frozen=True)
class FileBlock:
    """One file that a deliverable writes: a relative POSIX path and the whole new content."""

    path: str
    content: str


@dataclass(frozen=True)
class SearchReplace:
    """One SEARCH/REPLACE block of an edit: whole lines to find once, and what replaces them.

    `number` counts the blocks of one file from 1, in the order they are applied. An empty
    `search` appends `replace` to the end of the file; an empty `replace` deletes the lines.
    Both keep a trailing newline when they hold any line.
    """

    number: int
    search: str
    replace: str

    @property
    def first_line(self) -> str:
        """The first non-blank SEARCH line, trimmed and shortened, to name the block."""
        line = next((line.strip() for line in self.search.splitlines() if line.strip()), "")
        return line if len(line) <= 60 else line[:57] + "…"


@dataclass(frozen=True)
class FileEdit:
    """The SEARCH/REPLACE blocks that a deliverable applies to one existing file, in order."""

    path: str
    blocks: tuple[SearchReplace, ...]


@dataclass(frozen=True)
class Changes:
    """What a code deliverable does to the repository: new files whole, existing ones edited."""

    files: tuple[FileBlock, ...] = ()
    edits: tuple[FileEdit, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        """Every path written, files first, each once, in document order."""
        return tuple(dict.fromkeys([f.path for f in self.files] + [e.path for e in self.edits]))


class FileBlockError(ValueError):
    """A deliverable's file or edit blocks cannot be applied safely; the message lists every
    problem."""


def _clean_path(raw: str, kind: str = "File") -> tuple[str, str | None]:
    """(normalised path, problem or None) for a path written after `### File:` or `### Edit:`."""
    path = raw.strip().strip("`'\"").strip()
    if not path:
        return path, f"a '### {kind}:' heading has no path"
    if "\\" in path:
        return path, f"file path {path!r} uses backslashes; write forward slashes"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path) or path.startswith("~"):
        return path, f"file path {path!r} is absolute; write a path relative to the repository"
    parts = PurePosixPath(path).parts
    if ".." in parts:
        return path, f"file path {path!r} leaves the repository ('..' is not allowed)"
    normalised = "/".join(part for part in parts if part != ".")
    if not normalised:
        return path, f"file path {path!r} names no file"
    if normalised.split("/")[0] == ".git":
        return normalised, f"file path {path!r} is inside .git/, which is never written"
    return normalised, None


def _split_lines(text: str) -> list[str]:
    """The lines of `text`, split at LF, CRLF or CR only: a form feed or other Unicode line
    separator inside a file's content stays in its line (unlike str.splitlines)."""
    lines = re.split(r"\r\n|\n|\r", text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def search_replace_blocks(
    path: str, body: str, first: int = 1
) -> tuple[list[SearchReplace], str | None]:
    """The SEARCH/REPLACE blocks in the body of an `### Edit:` fence, and its problem or None.

    A block is a `<<<<<<< SEARCH` line, the lines to find, a `=======` line, the lines that
    replace them, and a `>>>>>>> REPLACE` line; markers start their line, with exactly seven
    characters. Blank lines may separate blocks; any other text outside a block is a problem,
    and so is a block that is not closed. Parsing stops at the first problem (nothing after
    it could be read without guessing). Blocks are numbered from `first`.
    """
    blocks: list[SearchReplace] = []
    lines = _split_lines(body)
    index = 0
    while index < len(lines):
        line = lines[index]
        number = first + len(blocks)
        if not line.strip():
            index += 1
            continue
        if not _SEARCH.match(line):
            if _DIVIDER.match(line) or _REPLACE.match(line):
                return blocks, (
                    f"edit block {number} of {path}: {line.strip()!r} comes before any "
                    "'<<<<<<< SEARCH' line"
                )
            return blocks, (
                f"the edit of {path} has text outside a SEARCH/REPLACE block: {line.strip()!r} "
                "(every change sits between '<<<<<<< SEARCH' and '>>>>>>> REPLACE')"
            )
        search: list[str] = []
        index += 1
        while index < len(lines) and not _DIVIDER.match(lines[index]):
            if _SEARCH.match(lines[index]) or _REPLACE.match(lines[index]):
                break
            search.append(lines[index])
            index += 1
        name = block_name(path, SearchReplace(number, _text(search), ""))
        if index >= len(lines) or not _DIVIDER.match(lines[index]):
            return blocks, f"{name} has no '=======' line after its SEARCH lines"
        replace: list[str] = []
        index += 1
        while index < len(lines) and not _REPLACE.match(lines[index]):
            if _SEARCH.match(lines[index]) or _DIVIDER.match(lines[index]):
                return blocks, (
                    f"{name} has {lines[index].strip()!r} inside its REPLACE lines: close it "
                    "with '>>>>>>> REPLACE' first (SEARCH and REPLACE lines cannot hold the "
                    "marker lines themselves)"
                )
            replace.append(lines[index])
            index += 1
        if index >= len(lines):
            return blocks, f"{name} is never closed with '>>>>>>> REPLACE'"
        blocks.append(SearchReplace(number, _text(search), _text(replace)))
        index += 1
    if not blocks:
        return blocks, (
            f"'### Edit: {path}' has no SEARCH/REPLACE block: write '<<<<<<< SEARCH', the lines "
            "to change, '=======', the new lines, '>>>>>>> REPLACE'"
        )
    return blocks, None


def block_name(path: str, block: SearchReplace) -> str:
    """How an objection names one SEARCH/REPLACE block, by its file, number and first line:
    `a.py edit block 2 (SEARCH starting 'if x:')`."""
    first = block.first_line
    shown = f"SEARCH starting {first!r}" if first else "empty SEARCH: an append"
    return f"{path} edit block {block.number} ({shown})"


def scan_changes(text: str) -> tuple[Changes, list[str]]:
    """Every `### File: path` and `### Edit: path` heading followed by a fenced block, and
    every problem found.

    The fence may be backticks or tildes of any length ≥ 3; it closes on a line holding only
    the same fence character, at least as many times. A file block's content keeps a trailing
    newline. Several edits of one path are one edit, their blocks in document order; a path
    may have one file block or edits, not both.
    """
    files: list[FileBlock] = []
    edits: dict[str, list[SearchReplace]] = {}
    problems: list[str] = []
    lines = _split_lines(text)
    index = 0
    while index < len(lines):
        heading = _BLOCK_HEADING.match(lines[index])
        if not heading:
            fence = _FENCE.match(lines[index])
            if fence:  # skip a code fence that belongs to no heading
                index = _fence_end(lines, index, fence.group("fence"))
            index += 1
            continue
        kind = heading.group("kind").capitalize()
        path, problem = _clean_path(heading.group("path"), kind)
        index += 1
        while index < len(lines) and not lines[index].strip():
            index += 1
        fence = _FENCE.match(lines[index]) if index < len(lines) else None
        if fence is None:
            problems.append(f"'### {kind}: {path}' is not followed by a fenced code block")
            continue
        end = _fence_end(lines, index, fence.group("fence"))
        if end >= len(lines):
            problems.append(f"the code block for {path} is never closed")
        content_lines = lines[index + 1 : end]
        index = end + 1
        if problem:
            problems.append(problem)
            continue
        if kind == "File":
            if any(block.path == path for block in files):
                problems.append(f"{path} has more than one file block")
            elif path in edits:
                problems.append(_both(path))
            else:
                files.append(FileBlock(path, _text(content_lines)))
            continue
        if any(block.path == path for block in files):
            problems.append(_both(path))
            continue
        earlier = edits.setdefault(path, [])
        blocks, problem = search_replace_blocks(path, "\n".join(content_lines), len(earlier) + 1)
        earlier.extend(blocks)
        if problem:
            problems.append(problem)
    changes = Changes(
        tuple(files), tuple(FileEdit(path, tuple(blocks)) for path, blocks in edits.items())
    )
    return changes, problems


def _both(path: str) -> str:
    return (
        f"{path} has both a '### File:' block and a '### Edit:' block: write a new file whole, "
        "or edit an existing one, not both"
    )


def scan_file_blocks(text: str) -> tuple[list[FileBlock], list[str]]:
    """The whole-file blocks of `scan_changes`, and every problem it found."""
    changes, problems = scan_changes(text)
    return list(changes.files), problems


def _fence_end(lines: list[str], start: int, fence: str) -> int:
    """The index of the line closing the fence opened at `start` (len(lines) if never)."""
    for index in range(start + 1, len(lines)):
        stripped = lines[index].strip()
        if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            return index
    return len(lines)


def parse_changes(text: str) -> Changes:
    """The file and edit blocks of a deliverable, ready to apply to a worktree.

    Raises FileBlockError when any block is unsafe or malformed (absolute path, `..`,
    unclosed fence, a SEARCH without its `=======`), so nothing is half-applied. Phase checks
    report the same problems as objections before the engine gets here.
    """
    changes, problems = scan_changes(text)
    if problems:
        raise FileBlockError("; ".join(problems))
    return changes


def parse_file_blocks(text: str) -> list[FileBlock]:
    """The whole-file blocks of `parse_changes` (FileBlockError on any problem)."""
    return list(parse_changes(text).files)


_TEST_PATH = re.compile(r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.[^/]*$|[^/]*\.(test|spec)\.[^/]*$)")


def is_test_path(path: str) -> bool:
    """A test file, by the conventions of any language the judge may run: under a `tests/` or
    `test/` directory, or named `test_*`, `*_test.*` (pytest, Go), `*.test.*` or `*.spec.*`
    (Jest, Mocha, Vitest). The tests phase may write only these; a session's new tests are
    the changed files among them."""
    return bool(_TEST_PATH.search(path))
