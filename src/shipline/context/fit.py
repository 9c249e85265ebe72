"""Fit a phase's repository context into its share of the token budget, and say what was cut.

What a phase asked for (`Candidates`: the files it needs, in priority order, and the ranked
map) is cut by rank, never in the middle of a file:
  1. each wanted file is shown whole if it fits in three quarters of the room; if not, it is
     replaced by its symbol outline under a visible `[cut: …]` note; if even that does not
     fit, a one-line `[cut: …]` note says it was left out;
  2. the map gets the rest of the room: files in rank order, each listed with all its
     symbols or not at all (a file already shown above is not listed again), then one
     `[cut: N lower-ranked files …]` note.
Every piece is counted on its own with its newline, so the text as a whole never estimates
over `room`. Pure: the token counter is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .tags import FileTags, Symbol

Count = Callable[[str], int]
MIN_ROOM = 40  # below this many tokens a repository context shows nothing useful
FILES_SHARE = 0.75  # the most of the room that wanted files take before the map's turn
MAP_HEADING = "## Map: files ranked by relevance, with their top-level symbols"
FILES_HEADING = "## Files"


@dataclass(frozen=True)
class SourceFile:
    """A file a phase needs to see: its whole current content and its outline."""

    path: str
    text: str
    tags: FileTags


@dataclass(frozen=True)
class Candidates:
    """Everything a phase's repository context could show, before the budget is applied."""

    source: str | None  # "main at 3f2a1b0c9d": the branch or worktree, and its commit
    files: tuple[SourceFile, ...] = ()  # wanted files, most important first
    ranked: tuple[tuple[str, FileTags], ...] = ()  # the map's files, most relevant first
    reason: str | None = None  # why there is nothing to show (not a git repository, …)
    missing: tuple[str, ...] = ()  # wanted files that could not be read (binary, too large)


@dataclass(frozen=True)
class Fitted:
    """The rendered repository context and its record (stored on the attempt)."""

    text: str
    record: dict[str, Any] = field(default_factory=dict)


def outline(tags: FileTags) -> list[str]:
    """A file's symbols, one line each; a method indented under its class."""
    return [("    " if s.parent else "  ") + _shown(s) for s in tags.symbols]


def _shown(symbol: Symbol) -> str:
    return symbol.signature or symbol.name


def empty(reason: str, candidates: Candidates | None = None) -> Fitted:
    """No repository context, and why; a wanted file is recorded as cut."""
    cut = [f.path for f in candidates.files] if candidates else []
    return Fitted("", _record(candidates.source if candidates else None, reason, cut=cut))


def _record(
    source: str | None,
    reason: str | None,
    *,
    room: int = 0,
    tokens: int = 0,
    files: Sequence[dict[str, Any]] = (),
    cut: Sequence[str] = (),
    map_files: int = 0,
    map_symbols: int = 0,
    map_tokens: int = 0,
    map_left_out: int = 0,
) -> dict[str, Any]:
    return {
        "source": source,
        "reason": reason,
        "room": room,
        "tokens": tokens,
        "map": {
            "files": map_files,
            "symbols": map_symbols,
            "tokens": map_tokens,
            "left_out": map_left_out,
        },
        "files": list(files),
        "cut": list(cut),
    }


def fit(candidates: Candidates, room: int, count: Count) -> Fitted:
    """The repository context that fits in `room` tokens (see the module doc)."""
    if candidates.reason is not None:
        return empty(candidates.reason, candidates)
    if room < MIN_ROOM:
        return empty("no room left in the token budget", candidates)
    header = f"# Repository context: {candidates.source}"
    pieces: list[str] = [header]
    used = count(header + "\n")
    files: list[dict[str, Any]] = []
    cut: list[str] = list(candidates.missing)
    shown: set[str] = set()
    files_room = int(room * FILES_SHARE) if candidates.ranked else room
    if candidates.files or candidates.missing:
        pieces.append(FILES_HEADING)
        used += count(FILES_HEADING + "\n")
    for path in candidates.missing:
        note = f"[cut: {path} is not shown: not UTF-8 text, or over 256 KiB]"
        if used + count(note + "\n") <= files_room:
            pieces.append(note)
            used += count(note + "\n")
    for source in candidates.files:
        whole = f'<source path="{source.path}">\n{source.text.rstrip()}\n</source>'
        whole_tokens = count(whole + "\n")
        lines = outline(source.tags)
        if used + whole_tokens <= files_room:
            pieces.append(whole)
            used += whole_tokens
            files.append({"path": source.path, "mode": "whole", "tokens": whole_tokens})
            shown.add(source.path)
            continue
        if lines:
            short = (
                f'<source path="{source.path}" cut="outline">\n[cut: {source.path} is about '
                f"{whole_tokens} tokens whole; only its outline fits the token budget]\n"
                + "\n".join(lines)
                + "\n</source>"
            )
            short_tokens = count(short + "\n")
            if used + short_tokens <= files_room:
                pieces.append(short)
                used += short_tokens
                files.append({"path": source.path, "mode": "outline", "tokens": short_tokens})
                shown.add(source.path)
                cut.append(source.path)
                continue
        note = (
            f"[cut: {source.path} (about {whole_tokens} tokens) left out to fit the token budget]"
        )
        if used + count(note + "\n") <= room:  # else the record still names it
            pieces.append(note)
            used += count(note + "\n")
        cut.append(source.path)
    found = _fit_map(candidates.ranked, shown, room - used, count)
    pieces += found.pieces
    used += found.tokens
    record = _record(
        candidates.source,
        None,
        room=room,
        tokens=used,
        files=files,
        cut=cut,
        map_files=found.files,
        map_symbols=found.symbols,
        map_tokens=found.tokens,
        map_left_out=found.left_out,
    )
    return Fitted("\n".join(pieces), record)


@dataclass(frozen=True)
class _MapFit:
    pieces: list[str]
    files: int
    symbols: int
    tokens: int
    left_out: int


def _fit_map(
    ranked: Sequence[tuple[str, FileTags]], shown: set[str], room: int, count: Count
) -> _MapFit:
    """The map in `room` tokens: whole entries in rank order, the rest counted as left out."""
    entries = [(path, tags) for path, tags in ranked if path not in shown and tags.symbols]
    heading_tokens = count(MAP_HEADING + "\n")
    note_reserve = count(f"[cut: {len(entries)} lower-ranked files of the map left out]\n")
    budget = room - heading_tokens - note_reserve
    pieces: list[str] = []
    used = symbols = 0
    for path, tags in entries:
        block = "\n".join([f"{path}:", *outline(tags)])
        tokens = count(block + "\n")
        if used + tokens <= budget:
            pieces.append(block)
            used += tokens
            symbols += len(tags.symbols)
    left_out = len(entries) - len(pieces)
    if not pieces:
        return _MapFit([], 0, 0, 0, left_out)
    listed = len(pieces)
    total = heading_tokens + used
    if left_out:
        note = f"[cut: {left_out} lower-ranked files of the map left out]"
        pieces.append(note)
        total += count(note + "\n")
    return _MapFit([MAP_HEADING, *pieces], listed, symbols, total, left_out)
