"""Apply a code deliverable's edits strictly: every SEARCH matches exactly once, or nothing is
written.

`plan_writes` reads the files a deliverable changes, applies its SEARCH/REPLACE blocks in
memory (`apply_search_replace`, pure), decides whether its whole-file blocks may write
(`whole_file_objection`, pure), and returns the new content of every file, or raises
`EditError` with every problem, before `files.apply_file_blocks` writes anything.

Matching is exact, on whole lines: no fuzzy match, no whitespace guessing. A file with CRLF
line endings is matched on its lines and keeps CRLF; a file that mixes line endings, or is not
UTF-8 text, is refused.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from shipline.phases.markdown import Changes, SearchReplace, block_name
from shipline.workspaces.files import check_relative, resolve_inside
from shipline.workspaces.git import WorkspaceError
from shipline.workspaces.worktree import UnsafePathError


class EditError(WorkspaceError):
    """A deliverable's changes cannot be applied; `problems` says why, one line each. Nothing
    was written."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def whole_file_objection(
    path: str,
    *,
    exists: bool,
    edit_format: str = "search-replace",
    origin: str | None = None,
    conflicted: Collection[str] = (),
) -> str | None:
    """May a whole-file block write `path`? None when it may, else the objection.

    A new file is always written whole. An existing one only with `edit_format = "whole"`, or
    by fix-ci after a merge conflict (origin "merge") when the file is one of the conflicted.
    """
    if not exists or edit_format == "whole" or (origin == "merge" and path in conflicted):
        return None
    return (
        f"{path} exists: edit it with SEARCH/REPLACE blocks (### Edit: {path}); whole-file "
        "blocks are for new files"
    )


def line_ending(content: str) -> str | None:
    """ "\\n", "\\r\\n", or None when the text mixes them (or has a lone "\\r")."""
    crlf = content.count("\r\n")
    if crlf == 0:
        return "\n" if "\r" not in content else None
    if crlf == content.count("\n") == content.count("\r"):
        return "\r\n"
    return None


def apply_search_replace(
    path: str, content: str, blocks: tuple[SearchReplace, ...]
) -> tuple[str, list[str]]:
    """`content` with every block applied in order, and one problem per block that fails.

    A SEARCH must equal whole consecutive lines of the content as the earlier blocks left it,
    exactly once. A failed block is skipped and the later ones still checked, so every
    problem is reported; the caller writes nothing when there is any. An empty SEARCH appends.
    The result keeps the file's line endings and its missing final newline, if it had one.
    """
    ending = line_ending(content)
    if ending is None:
        return content, [
            f"{path} mixes CRLF and LF line endings: SEARCH blocks cannot match it exactly "
            "(normalise its line endings first)"
        ]
    text = content.replace("\r\n", "\n") if ending == "\r\n" else content
    unterminated = bool(text) and not text.endswith("\n")
    work = text + "\n" if unterminated else text
    problems: list[str] = []
    for block in blocks:
        if not block.search:
            work += block.replace
            continue
        starts = _line_starts(work, block.search)
        if len(starts) == 1:
            start = starts[0]
            work = work[:start] + block.replace + work[start + len(block.search) :]
            continue
        earlier = f" as blocks 1–{block.number - 1} left it" if block.number > 1 else ""
        why = (
            f"not found in the file{earlier}: copy the lines exactly, whole lines with their "
            "indentation"
            if not starts
            else f"found {len(starts)} times: add neighbouring lines so that it matches once"
        )
        problems.append(f"{block_name(path, block)}: {why}")
    if unterminated and work.endswith("\n"):
        work = work[:-1]
    return (work.replace("\n", "\r\n") if ending == "\r\n" else work), problems


def _line_starts(text: str, search: str) -> list[int]:
    """Where `search` (whole lines, ending in a newline) occurs in `text` at a line start."""
    found: list[int] = []
    position = text.find(search)
    while position != -1:
        if position == 0 or text[position - 1] == "\n":
            found.append(position)
        position = text.find(search, position + 1)
    return found


def plan_writes(
    worktree: Path,
    changes: Changes,
    *,
    edit_format: str = "search-replace",
    origin: str | None = None,
    conflicted: Collection[str] = (),
) -> list[tuple[str, str]]:
    """The (path, new content) of every file that `changes` writes in `worktree`, in order.

    Everything is checked in memory first: paths (relative, no `..`, nothing in .git, no
    symlink out of the worktree), whole-file blocks (`whole_file_objection`) and every edit
    block. Any problem raises EditError listing them all; nothing has been written.
    """
    problems: list[str] = []
    writes: list[tuple[str, str]] = []
    for block in changes.files:
        target = _target(worktree, block.path, problems)
        if target is None:
            continue
        if target.is_dir():
            problems.append(f"{block.path} is a directory: a file block writes a file")
            continue
        refused = whole_file_objection(
            block.path,
            exists=target.exists(),
            edit_format=edit_format,
            origin=origin,
            conflicted=conflicted,
        )
        if refused:
            problems.append(refused)
        else:
            writes.append((block.path, block.content))
    for edit in changes.edits:
        target = _target(worktree, edit.path, problems)
        if target is None or not edit.blocks:
            continue
        if not target.is_file():
            what = "is a directory" if target.is_dir() else "does not exist"
            problems.append(
                f"{block_name(edit.path, edit.blocks[0])}: the file {what}; a new file is "
                f"written whole with '### File: {edit.path}'"
            )
            continue
        try:
            content = target.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"{edit.path} is not UTF-8 text: SEARCH/REPLACE edits text files")
            continue
        new, failed = apply_search_replace(edit.path, content, edit.blocks)
        problems += failed
        if not failed:
            writes.append((edit.path, new))
    if problems:
        raise EditError(problems)
    return writes


def _target(worktree: Path, path: str, problems: list[str]) -> Path | None:
    """The file `path` names inside `worktree`, or None with the problem recorded."""
    try:
        check_relative(path)
        return resolve_inside(worktree, path)
    except UnsafePathError as exc:
        problems.append(str(exc))
        return None
