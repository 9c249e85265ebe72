"""Atomic file writes: a reader sees the old file or the new one, never half of either.

A crash mid-write leaves at most `<name>.partial` next to the file, which the next write
replaces.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 1) -> None:
    """Write `data` as JSON (UTF-8, non-ASCII kept) to `path`, creating its folder; `indent`
    None writes it on one line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    os.replace(partial, path)
