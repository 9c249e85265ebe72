"""Gather what a phase may see of the repository: the ranked map, and the files it needs.

The files are read from one commit, through git (`workspaces/git.py`'s `Git`, handed in by the
engine as a `TreeReader`): the target branch before the code phases, the ticket's worktree
for them once it exists. A folder that is not a git repository, a repository without a
commit, or a git that fails gives an empty context with its reason, never an error: the
context helps a phase, it never stops one.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from shipline.errors import ShiplineError
from shipline.phases.base import RepoContext
from shipline.phases.markdown import is_test_path, scan_file_blocks, section

from .cache import CACHE_PATH, TagCache
from .fit import Candidates, SourceFile
from .rank import mentioned_names, named_paths, rank_files
from .tags import EMPTY, FileTags, language_of, parse_tags

MAX_MAP_FILE_BYTES = 512 * 1024  # a bigger source file is generated or vendored: no tags
MAX_FILE_BYTES = 256 * 1024  # a bigger wanted file is not read (it would not fit anyway)
SKIPPED_DIRS = frozenset(
    {"node_modules", "vendor", "third_party", "dist", "build", ".git", "__pycache__"}
)
TESTS_NEAR = 2  # existing tests shown per file the plan names
BLOB_BATCH = 2000  # blobs read per `git cat-file --batch`


class Entry(Protocol):
    """One file of a commit's tree (workspaces/git.py TreeEntry)."""

    @property
    def path(self) -> str: ...

    @property
    def sha(self) -> str: ...

    @property
    def size(self) -> int: ...


class TreeReader(Protocol):
    """What the context needs of git: resolve a revision, list its files, read blobs."""

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        errors: str | None = None,
    ) -> subprocess.CompletedProcess[str]: ...

    def tree(self, rev: str) -> Sequence[Entry]: ...

    def blobs(self, shas: Sequence[str]) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class Revision:
    """A revision to read, and how the prompt names it (`main`, `the ticket's worktree`)."""

    rev: str
    name: str


def gather(
    kind: RepoContext,
    git: TreeReader,
    revisions: Sequence[Revision],
    cache: TagCache,
    ticket_text: str,
    inputs: Mapping[str, str],
) -> Candidates:
    """The candidates of a phase's repository context (shipline.context.fit cuts them)."""
    try:
        return _gather(kind, git, revisions, cache, ticket_text, inputs)
    except ShiplineError as exc:  # git failed or timed out: no context, and why
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Candidates(None, reason=f"git could not read the repository: {first}")


def _gather(
    kind: RepoContext,
    git: TreeReader,
    revisions: Sequence[Revision],
    cache: TagCache,
    ticket_text: str,
    inputs: Mapping[str, str],
) -> Candidates:
    if git.run("rev-parse", "--git-dir", check=False).returncode != 0:
        return Candidates(None, reason="not a git repository")
    for revision in revisions:
        found = git.run("rev-parse", "--verify", "-q", f"{revision.rev}^{{commit}}", check=False)
        if found.returncode == 0:
            sha = found.stdout.strip()
            label = f"{revision.name} at {sha[:10]}"
            break
    else:
        return Candidates(None, reason="the repository has no commit yet")
    entries = {entry.path: entry for entry in git.tree(sha)}
    tags = repository_tags(git, entries.values(), cache)
    mentions = "\n".join([ticket_text, *inputs.values()])
    defined = {name for file_tags in tags.values() for name in file_tags.names}
    ranked = rank_files(tags, named_paths(mentions, entries), mentioned_names(mentions, defined))
    order = {path: index for index, (path, _) in enumerate(ranked)}
    wanted = _wanted(kind, ticket_text, inputs, list(entries), order)
    files, missing = _read(git, [entries[path] for path in wanted], tags, inputs)
    return Candidates(
        label,
        tuple(files),
        tuple((path, tags[path]) for path, _ in ranked),
        missing=tuple(missing),
    )


def mapped(path: str, size: int) -> bool:
    """Whether a file belongs in the map: a language with a parser, not vendored, not huge."""
    if language_of(path) is None or size > MAX_MAP_FILE_BYTES:
        return False
    *folders, name = path.split("/")
    return not any(part in SKIPPED_DIRS for part in folders) and ".min." not in name


def repository_tags(
    git: TreeReader, entries: Iterable[Entry], cache: TagCache
) -> dict[str, FileTags]:
    """The tags of every mapped file: from the cache by blob sha, else parsed (and cached)."""
    tags: dict[str, FileTags] = {}
    missing: list[Entry] = []
    for entry in entries:
        if not mapped(entry.path, entry.size):
            continue
        language = language_of(entry.path)
        assert language is not None
        cached = cache.get(entry.sha, language)
        if cached is None:
            missing.append(entry)
        else:
            tags[entry.path] = cached
    for start in range(0, len(missing), BLOB_BATCH):
        batch = missing[start : start + BLOB_BATCH]
        blobs = git.blobs([entry.sha for entry in batch])
        for entry in batch:
            language = language_of(entry.path)
            assert language is not None
            try:
                parsed = parse_tags(entry.path, blobs.get(entry.sha, b""))
            except (ImportError, OSError, RuntimeError, ValueError):
                # a grammar that does not load or parse here: the file is mapped without
                # symbols, and not cached, rather than the phase stopping
                tags[entry.path] = EMPTY
                continue
            cache.put(entry.sha, language, parsed)
            tags[entry.path] = parsed
    cache.save()
    return tags


def _wanted(
    kind: RepoContext,
    ticket_text: str,
    inputs: Mapping[str, str],
    paths: list[str],
    order: Mapping[str, int],
) -> list[str]:
    """The files a phase needs whole, most relevant first (see phases/base.py RepoContext)."""

    def by_rank(found: list[str]) -> list[str]:
        return sorted(found, key=lambda path: order.get(path, len(order)))

    if kind == "named":
        return by_rank(named_paths(ticket_text, paths))
    if kind != "planned":
        return []
    plan = inputs.get("plan.md", "")
    texts = [
        section(plan, "Files") or plan,
        inputs.get("diagnosis.md", ""),
        inputs.get("ci.log", ""),
    ]
    written, _ = scan_file_blocks(inputs.get("implementation.md", ""))
    texts += [block.path for block in written]  # fix-ci: the files implement wrote
    named = by_rank(named_paths("\n".join(texts), paths))
    near = [test for path in named for test in nearby_tests(path, paths)]
    return list(dict.fromkeys(named + near))


def nearby_tests(path: str, paths: Sequence[str]) -> list[str]:
    """The existing tests of a source file, nearest first: test files of its language whose
    name is the file's (`tests/test_accounts.py`, `accounts_test.go`, `format.test.js`), or
    starts with it (`test_accounts_overdraft.py`)."""
    if is_test_path(path):
        return []
    source = PurePosixPath(path)
    stem = source.stem
    if stem.startswith("__"):
        return []
    language = language_of(path)
    found = []
    for candidate in paths:
        if candidate == path or not is_test_path(candidate):
            continue
        if language_of(candidate) != language:
            continue
        subject = _subject(PurePosixPath(candidate).name)
        if subject == stem or subject.startswith(stem + "_"):
            found.append(candidate)

    def distance(candidate: str) -> tuple[int, int, str]:
        shared = 0
        theirs = PurePosixPath(candidate).parts[:-1]
        for mine, other in zip(source.parts[:-1], theirs, strict=False):
            if mine != other:
                break
            shared += 1
        return (-shared, len(candidate), candidate)

    return sorted(found, key=distance)[:TESTS_NEAR]


def _subject(name: str) -> str:
    """What a test file tests, by its name: test_accounts.py, accounts_test.go → accounts."""
    stem = name.split(".", 1)[0] if "." in name else name
    for suffix in (".test", ".spec"):
        if f"{suffix}." in name:
            return name.split(suffix, 1)[0]
    return stem.removeprefix("test_").removesuffix("_test")


def _read(
    git: TreeReader,
    entries: Sequence[Entry],
    tags: Mapping[str, FileTags],
    inputs: Mapping[str, str],
) -> tuple[list[SourceFile], list[str]]:
    """The wanted files' text; a file too big, not text, or already in the prompt as a file
    block with this very content is not read (the first two are reported missing)."""
    small = [entry for entry in entries if entry.size <= MAX_FILE_BYTES]
    blobs = git.blobs([entry.sha for entry in small])
    in_prompt = {
        block.path: block.content for text in inputs.values() for block in scan_file_blocks(text)[0]
    }
    files: list[SourceFile] = []
    missing: list[str] = []
    for entry in entries:
        raw = blobs.get(entry.sha)
        if raw is None or b"\0" in raw:
            missing.append(entry.path)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            missing.append(entry.path)
            continue
        if in_prompt.get(entry.path) == text:
            continue
        files.append(SourceFile(entry.path, text, tags.get(entry.path, EMPTY)))
    return files, missing


def default_cache(root: Path) -> TagCache:
    """The tags cache of a project: `.shipline/context/tags.json` under its root."""
    return TagCache(root / CACHE_PATH)
