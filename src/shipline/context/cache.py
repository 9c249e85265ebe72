"""The tags cache: each file's tags, keyed by its git blob sha, in `.shipline/context/tags.json`.

A blob sha names the content, so a cached entry is right for any path, branch or worktree
that holds the same bytes, and never stale. A process also keeps the tags it read in memory,
so a worker's next prompt does not read the file again. The cache is only an optimisation:
a missing, unreadable, corrupt or older-version file is an empty cache, and a cache that
cannot be written is left as it was. Entries the last build did not use are dropped once they
outnumber the used ones twice over, so the file follows the repository and does not grow
for ever.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shipline.atomic import write_json_atomic
from shipline.config import STATE_DIR

from .tags import TAGS_VERSION, FileTags

CACHE_PATH = Path(STATE_DIR) / "context" / "tags.json"
KEEP_UNUSED = 2  # unused entries kept, as a multiple of the used ones
MEMORY_ENTRIES = 50_000  # tags kept in the process between prompts (a worker's next prompt)
_memory: dict[str, FileTags] = {}


def forget() -> None:
    """Drop the tags this process keeps in memory (the file is untouched)."""
    _memory.clear()


class TagCache:
    """Tags by `<blob sha>:<language>`: from this process's memory, else from the file (read on
    first need), else parsed by the caller and `put`; the file is saved when it changed."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._entries: dict[str, Any] | None = None
        self._used: set[str] = set()
        self._dirty = False
        self.hits = 0
        self.misses = 0

    def _load(self) -> dict[str, Any]:
        if self._entries is None:
            self._entries = {}
            if self.path is not None:
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    data = None
                if isinstance(data, dict) and data.get("version") == TAGS_VERSION:
                    tags = data.get("tags")
                    self._entries = tags if isinstance(tags, dict) else {}
        return self._entries

    def get(self, sha: str, language: str) -> FileTags | None:
        key = f"{sha}:{language}"
        tags = _memory.get(key)
        if tags is None:
            raw = self._load().get(key)
            try:
                tags = FileTags.from_json(raw) if raw is not None else None
            except (KeyError, TypeError, ValueError):
                tags = None
            if tags is None:
                self.misses += 1
                return None
            _remember(key, tags)
        self._used.add(key)
        self.hits += 1
        return tags

    def put(self, sha: str, language: str, tags: FileTags) -> None:
        key = f"{sha}:{language}"
        self._load()[key] = tags.as_json()
        _remember(key, tags)
        self._used.add(key)
        self._dirty = True

    def save(self) -> None:
        """Write the cache if it changed; a failure to write only costs speed next time."""
        if not self._dirty or self.path is None or self._entries is None:
            return
        entries = self._entries
        for key in self._used:  # tags this process had in memory but the file lost
            if key not in entries and key in _memory:
                entries[key] = _memory[key].as_json()
        unused = [key for key in entries if key not in self._used]
        if len(unused) > KEEP_UNUSED * len(self._used):
            entries = {key: entries[key] for key in self._used}
        try:
            write_json_atomic(self.path, {"version": TAGS_VERSION, "tags": entries}, indent=None)
        except OSError:
            return
        self._dirty = False


def _remember(key: str, tags: FileTags) -> None:
    if len(_memory) >= MEMORY_ENTRIES:
        _memory.clear()
    _memory[key] = tags
