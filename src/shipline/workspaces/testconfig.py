"""The test configuration that can deselect or skip tests, locked along with the tests.

When the tests phase locks its test files (files.py `lock_files`), these are locked with them,
each by the digest of the part of it that decides which tests run, so an implement attempt
cannot dodge a locked test through configuration:

- pytest: `conftest.py` (whole; also every conftest.py the repository tracks, anywhere),
  `pytest.ini`, `.pytest.ini`, `pytest.toml`, `.pytest.toml` (whole), the `[pytest]` section
  of `tox.ini`, the `[tool:pytest]` section of `setup.cfg`, and the `[tool.pytest]` table of
  `pyproject.toml` (with `ini_options`; the rest of the file stays free), in the repository
  root and every directory above a locked test.
- jest / vitest: `jest.config.*`, `vitest.config.*`, `vitest.workspace.*`, `vite.config.*`
  (whole), and the `jest` key and `scripts.test` of `package.json`, in the same directories.
- go test: `<package>/*_test.go`, the set of test files of a locked test's package with their
  content (a `TestMain` in any of them decides what runs; build tags live in the locked files).

A file that does not exist is locked as absent: a new `conftest.py` in a locked test's
directory is a change. A section or table that is absent is locked as absent too: adding a
`tox.ini` without a `[pytest]` section stays allowed. A glob path (`jest.config.*`) locks
every file of its directory that matches it, with their names.

Not locked: the judge command's own wrappers (a Makefile, tox's `[testenv]` commands, a
noxfile). With pytest the per-test proof (judge/proof.py) catches what they deselect; with
other runners, give `[judge] command` that names the runner itself.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from shipline.workspaces.files import check_relative, resolve_inside
from shipline.workspaces.worktree import UnsafePathError

PYTHON_NAMES = (
    "conftest.py",
    "pytest.ini",
    ".pytest.ini",
    "pytest.toml",
    ".pytest.toml",
    "tox.ini",
    "setup.cfg",
    "pyproject.toml",
)
JS_NAMES = (
    "package.json",
    "jest.config.*",
    "vitest.config.*",
    "vitest.workspace.*",
    "vite.config.*",
)
GO_TESTS = "*_test.go"
_JS_SUFFIXES = (".js", ".jsx", ".ts", ".tsx", ".mjs", ".cjs", ".mts", ".cts")
_SECTIONS = {"tox.ini": "pytest", "setup.cfg": "tool:pytest"}


def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


ABSENT = _sha(b"absent")  # no such file, or no such section in it


def ecosystem(path: str) -> str | None:
    """The runner family of a test file by its name: python, js, go, or None."""
    name = PurePosixPath(path).name
    if name.endswith(".py"):
        return "python"
    if name.endswith("_test.go"):
        return "go"
    if name.endswith(_JS_SUFFIXES):
        return "js"
    return None


def config_paths(test_paths: Iterable[str], tracked: Iterable[str]) -> list[str]:
    """The configuration paths to lock with `test_paths` (see the module doc); `tracked` is the
    repository's file list (every tracked conftest.py is locked)."""
    found: set[str] = set()
    python = False
    for path in test_paths:
        kind = ecosystem(path)
        parent = PurePosixPath(check_relative(path).as_posix()).parent
        if kind == "go":
            found.add((parent / GO_TESTS).as_posix())
        elif kind is not None:
            python = python or kind == "python"
            names = PYTHON_NAMES if kind == "python" else JS_NAMES
            for folder in (parent, *parent.parents):
                found.update((folder / name).as_posix() for name in names)
    if python:
        found.update(p for p in tracked if PurePosixPath(p).name == "conftest.py")
    return sorted(found)


def describe(path: str) -> str:
    """How an objection names a locked configuration path: the file and the part locked."""
    pure = PurePosixPath(path)
    name = pure.name
    if name == "pyproject.toml":
        return f"{path} [tool.pytest]"
    if name in _SECTIONS:
        return f"{path} [{_SECTIONS[name]}]"
    if name == "package.json":
        return f"{path} (jest, scripts.test)"
    if name == GO_TESTS:
        package = pure.parent.as_posix()
        return f"{path} (the test files of Go package {package}, where a TestMain decides)"
    return path


def _section(text: str, wanted: str) -> list[str] | None:
    """The lines of every `[wanted]` section of an ini file (as pytest's iniconfig finds
    headers), or None when there is none."""
    lines: list[str] | None = None
    inside = False
    for line in text.splitlines():
        if line.startswith("["):
            header = line.split("#", 1)[0].split(";", 1)[0].rstrip()
            if header.endswith("]"):
                inside = header[1:-1] == wanted
                if inside:
                    lines = lines if lines is not None else []
                continue
        if inside and lines is not None:
            lines.append(line)
    return lines


def config_digest(name: str, data: bytes | None) -> str:
    """The digest of what in a configuration file named `name` can deselect tests (pure).
    `data` None: the file does not exist."""
    if data is None:
        return ABSENT
    if name in _SECTIONS:
        lines = _section(data.decode("utf-8", "replace"), _SECTIONS[name])
        return ABSENT if lines is None else _sha(b"section", "\n".join(lines).encode())
    if name == "pyproject.toml":
        try:
            table = tomllib.loads(data.decode("utf-8")).get("tool", {}).get("pytest")
        except (UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
            return _sha(b"unparsed", data)
        if table is None:
            return ABSENT
        return _sha(b"table", json.dumps(table, sort_keys=True, default=str).encode())
    if name == "package.json":
        try:
            parsed = json.loads(data)
        except (UnicodeDecodeError, ValueError):
            return _sha(b"unparsed", data)
        if not isinstance(parsed, dict):
            return _sha(b"unparsed", data)
        scripts = parsed.get("scripts")
        test = scripts.get("test") if isinstance(scripts, dict) else None
        if parsed.get("jest") is None and test is None:
            return ABSENT
        locked = {"jest": parsed.get("jest"), "scripts.test": test}
        return _sha(b"package", json.dumps(locked, sort_keys=True).encode())
    return _sha(b"file", data)


def _read(worktree: Path, path: str) -> bytes | None:
    target = resolve_inside(worktree, path)
    return target.read_bytes() if target.is_file() else None


def _glob_digest(worktree: Path, path: str) -> str:
    pure = PurePosixPath(path)
    folder = worktree.resolve() if pure.parent == PurePosixPath(".") else None
    if folder is None:
        folder = resolve_inside(worktree, pure.parent.as_posix())
    if not folder.is_dir():
        return ABSENT
    parts: list[bytes] = []
    for entry in sorted(folder.iterdir()):
        if fnmatch.fnmatchcase(entry.name, pure.name):
            relative = (pure.parent / entry.name).as_posix()
            data = _read(worktree, relative)
            parts += [entry.name.encode(), b"missing" if data is None else data]
    return _sha(b"glob", *parts) if parts else ABSENT


def lock_digest(worktree: Path, path: str) -> str:
    """The digest a configuration path is locked by, as it is in `worktree` now. A symlink
    that leads out of the worktree digests as such (a change, never a crash)."""
    try:
        if "*" in PurePosixPath(path).name:
            return _glob_digest(worktree, path)
        return config_digest(PurePosixPath(path).name, _read(worktree, path))
    except UnsafePathError as exc:
        return _sha(b"unsafe", str(exc).encode())
    except OSError as exc:  # unreadable (a directory where a file was, permissions)
        return _sha(b"unreadable", str(exc).encode())


def lock_config(worktree: Path, paths: Iterable[str]) -> dict[str, str]:
    """One digest per configuration path, recorded when the tests are locked."""
    return {path: lock_digest(worktree, path) for path in sorted(set(paths))}


def changed_config(worktree: Path, locked: Mapping[str, str]) -> list[str]:
    """The locked configuration paths whose digest differs from the recorded one."""
    return sorted(path for path, sha in locked.items() if lock_digest(worktree, path) != sha)
