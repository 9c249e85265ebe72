"""Write a phase's file blocks into a worktree safely, commit them, and lock tests by hash.

Every path is checked before anything is written: relative, no `..`, nothing under `.git`,
and, after resolving symlinks, still inside the worktree. `hash_files` and
`changed_locked_files` let the `implement` phase prove it left the failing tests alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from shipline.workspaces.git import GIT_TIMEOUT_S, Git, Identity, WorkspaceError
from shipline.workspaces.worktree import UnsafePathError


def check_relative(path: str) -> PurePosixPath:
    """Refuse a path that could leave the worktree before any file system look-up.

    Pure: absolute paths, `~`, `..` components, NUL bytes and anything under `.git` are refused.
    """
    if not path or not path.strip():
        raise UnsafePathError("empty path: give a path relative to the repository root")
    if "\0" in path:
        raise UnsafePathError(f"path {path!r} contains a NUL byte")
    posix = path.replace("\\", "/")
    pure = PurePosixPath(posix)
    if pure.is_absolute() or posix.startswith("~") or (len(posix) > 1 and posix[1] == ":"):
        raise UnsafePathError(
            f"path {path!r} is absolute: give a path relative to the repository root"
        )
    if ".." in pure.parts:
        raise UnsafePathError(
            f"path {path!r} climbs out with '..': give a path inside the worktree"
        )
    if any(part.lower() == ".git" for part in pure.parts):
        raise UnsafePathError(
            f"path {path!r} is inside .git: shipline never writes git's own files"
        )
    return pure


def resolve_inside(root: Path, path: str) -> Path:
    """The real location of `path` under `root`; refused if it, or a symlink on its way, escapes."""
    relative = check_relative(path)
    real_root = Path(root).resolve()
    target = (real_root / relative).resolve()
    if target != real_root and not target.is_relative_to(real_root):
        raise UnsafePathError(
            f"path {path!r} leads outside the worktree through a symlink (to {target})"
        )
    return target


@dataclass(frozen=True)
class AppliedFiles:
    """What `apply_file_blocks` wrote, and the commit it made (None when nothing changed)."""

    paths: tuple[str, ...]
    commit: str | None


def apply_file_blocks(
    worktree: Path,
    blocks: Sequence[tuple[str, str]],
    message: str,
    *,
    author: Identity | None = None,
    commit: bool = True,
    git_timeout_s: float = GIT_TIMEOUT_S,
) -> AppliedFiles:
    """Write every (path, content) block, `git add` them and commit with `message`.

    All paths are checked first; one unsafe path refuses the whole set, and nothing is written.
    A commit is made only when something changed. `commit=False` stops after `git add` (a
    merge in progress is committed whole by its caller, never by paths). `author` commits as
    that (name, email); by default as git's configured user, else as shipline.
    """
    if not message.strip():
        raise WorkspaceError("a commit message is required to apply file blocks")
    targets: list[tuple[str, Path, str]] = []
    for path, content in blocks:
        targets.append((check_relative(path).as_posix(), resolve_inside(worktree, path), content))
    seen: dict[Path, str] = {}
    for rel, target, _ in targets:
        if target in seen and seen[target] != rel:
            raise UnsafePathError(f"paths {seen[target]!r} and {rel!r} name the same file")
        seen[target] = rel
        if target.is_dir():
            raise UnsafePathError(f"path {rel!r} is a directory: file blocks write files")
    for _, target, content in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8", newline="") as handle:
            handle.write(content)
    paths = tuple(dict.fromkeys(rel for rel, _, _ in targets))
    if not paths:
        return AppliedFiles(paths=(), commit=None)
    git = Git(worktree, author, git_timeout_s)
    git.run("add", "--", *paths)
    if not commit:
        return AppliedFiles(paths=paths, commit=None)
    if git.ok("diff", "--cached", "--quiet", "--", *paths):
        return AppliedFiles(paths=paths, commit=None)
    git.run("commit", "--no-verify", "-m", message, "--", *paths)
    return AppliedFiles(paths=paths, commit=git.head())


def hash_files(worktree: Path, paths: Iterable[str]) -> str:
    """sha256 over the sorted paths and their bytes; a missing file hashes as missing."""
    digest = hashlib.sha256()
    for rel in sorted({check_relative(p).as_posix() for p in paths}):
        target = resolve_inside(worktree, rel)
        digest.update(rel.encode() + b"\0")
        if target.is_file():
            data = target.read_bytes()
            digest.update(b"file\0%d\0" % len(data) + data)
        else:
            digest.update(b"missing\0")
    return digest.hexdigest()


def lock_files(worktree: Path, paths: Iterable[str]) -> dict[str, str]:
    """One hash per path, to record when the failing tests are committed."""
    return {
        rel: hash_files(worktree, [rel])
        for rel in sorted({check_relative(p).as_posix() for p in paths})
    }


def changed_locked_files(worktree: Path, locked: Mapping[str, str]) -> list[str]:
    """The locked paths whose content (or existence) differs from the recorded hash."""
    return sorted(path for path, sha in locked.items() if hash_files(worktree, [path]) != sha)
