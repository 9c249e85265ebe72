"""Per-ticket git worktrees: create or repair, set up once, list with disk use, remove, prune.

Each ticket works in `<root>/<ticket id>` on branch `shipline/<id>-<slug>`. Every change to
the set of worktrees takes an exclusive lock on the repository (a `flock` on a file in the
common git dir), so any number of threads, workers and processes can create worktrees on one
repository at once. `ensure_worktree` is idempotent: it reuses a healthy worktree and repairs
what a crash leaves behind (a half-created directory, an entry still locked `initializing`,
a branch without a worktree, a stale `.git/worktrees/*` entry). Setup commands run once per
worktree; their record and log live in the worktree's private git dir, never in the tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import unicodedata
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from shipline.atomic import write_json_atomic
from shipline.process import run_command
from shipline.redact import redact
from shipline.workspaces.git import GIT_TIMEOUT_S, Git, WorkspaceError

BRANCH_PREFIX = "shipline/"
SETUP_RECORD = "shipline-setup.json"
SETUP_LOG = "shipline-setup.log"
LAST_USED = "shipline-last-used"
_REPO_LOCK = "shipline-workspaces.lock"
_SETUP_LOCK = "shipline-setup.lock"
_TICKET_KEY = "shipline-ticket"  # git config branch.<name>.shipline-ticket = <ticket id>
_TICKET_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_INITIALIZING = "initializing"  # git's lock reason while `worktree add` is under way


class UnsafePathError(WorkspaceError):
    """A path would leave the worktree (absolute, `..`, `.git`, or a symlink escape)."""


class SetupError(WorkspaceError):
    """A setup command failed in a new worktree; its output is in the setup log."""


# --- names (pure) -----------------------------------------------------------------------------


def check_ticket_id(ticket_id: str | int) -> str:
    """The ticket id as used in paths and branch names; refused if it cannot be one."""
    tid = str(ticket_id)
    if not _TICKET_ID.fullmatch(tid):
        raise WorkspaceError(
            f"ticket id {tid!r} cannot name a worktree: use letters, digits, '-' and '_' "
            "(at most 64, starting with a letter or digit)"
        )
    return tid


def slugify(title: str, max_len: int = 40) -> str:
    """`Fix: the Login page (v2)!` → `fix-the-login-page-v2`; ASCII, for branch names."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return slug[:max_len].rstrip("-")


def branch_name(ticket_id: str | int, title: str) -> str:
    """The ticket's branch: `shipline/<id>-<slug>`, or `shipline/<id>` for an empty slug."""
    tid = check_ticket_id(ticket_id)
    slug = slugify(title)
    return f"{BRANCH_PREFIX}{tid}-{slug}" if slug else f"{BRANCH_PREFIX}{tid}"


def default_root(repo: Path) -> Path:
    """Where worktrees go unless configured: next to the repository, never inside it
    (so the main checkout's tools, such as pytest, do not walk into them)."""
    repo = Path(repo).resolve()
    return repo.parent / f"{repo.name}.worktrees"


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetupStep:
    command: str
    exit_code: int
    duration_s: float
    timed_out: bool


@dataclass(frozen=True)
class SetupRecord:
    """The outcome of a worktree's setup commands, kept in its git dir."""

    commands: tuple[str, ...]
    ok: bool
    steps: tuple[SetupStep, ...]
    log_path: Path
    finished_at: float


@dataclass(frozen=True)
class Workspace:
    """A ticket's ready worktree."""

    ticket_id: str
    branch: str
    path: Path
    git_dir: Path  # the worktree's private git dir: <repo>/.git/worktrees/<name>
    created: bool  # False: an existing worktree was reused
    repaired: tuple[str, ...] = ()  # what was cleaned up first, after a crash
    setup: SetupRecord | None = None


WorkspaceState = Literal["ok", "broken", "orphan", "foreign"]


@dataclass(frozen=True)
class WorkspaceInfo:
    """One directory under the worktree root, for `shipline workspaces`.

    state: ok (a healthy worktree), broken (registered, but a crash left it unusable),
    orphan (a directory of this repository's worktrees that git no longer knows),
    foreign (not ours: another repository's worktree or unrelated files; never removed).
    """

    ticket_id: str
    path: Path
    branch: str | None
    state: WorkspaceState
    disk_bytes: int
    last_used: float  # epoch seconds


@dataclass(frozen=True)
class _Entry:
    path: Path
    branch: str | None
    locked: str | None
    prunable: str | None


# --- git plumbing -----------------------------------------------------------------------------


_common_dirs: dict[Path, Path] = {}  # repository → its common git dir


def _common_dir(git: Git) -> Path:
    """The common git dir of the repository `git` runs in (asked once per repository)."""
    repo = git.cwd
    if not repo.is_dir():
        raise WorkspaceError(f"repository {repo} does not exist")
    repo = repo.resolve()
    if repo not in _common_dirs:
        proc = git.run("rev-parse", "--git-common-dir", check=False)
        if proc.returncode != 0:
            raise WorkspaceError(f"{repo} is not a git repository: run `git init` there first")
        _common_dirs[repo] = (repo / proc.stdout.strip()).resolve()
    return _common_dirs[repo]


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive lock between threads and processes (each call opens its own file)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _entries(git: Git) -> list[_Entry]:
    out = git.run("worktree", "list", "--porcelain").stdout
    entries = []
    for block in out.strip().split("\n\n"):
        fields: dict[str, str | None] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value if value else None
        if "worktree" not in fields or fields["worktree"] is None:
            continue
        branch = fields.get("branch")
        entries.append(
            _Entry(
                path=Path(fields["worktree"] or "").resolve(),
                branch=branch.removeprefix("refs/heads/") if branch else None,
                locked=(fields["locked"] or "") if "locked" in fields else None,
                prunable=(fields["prunable"] or "") if "prunable" in fields else None,
            )
        )
    return entries


def _entry_at(entries: Sequence[_Entry], path: Path) -> _Entry | None:
    return next((e for e in entries if e.path == path), None)


def _gitdir_of(path: Path) -> Path | None:
    """The private git dir named by a worktree's `.git` file, or None."""
    dotgit = path / ".git"
    try:
        text = dotgit.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = Path(text.removeprefix("gitdir:").strip())
    return (path / gitdir).resolve() if not gitdir.is_absolute() else gitdir.resolve()


def _dir_owner(path: Path, common: Path) -> Literal["missing", "empty", "ours", "foreign"]:
    """Whose directory this is: safe to delete only when 'empty' or 'ours'."""
    if not path.exists() and not path.is_symlink():
        return "missing"
    if path.is_symlink() or not path.is_dir():
        return "foreign"
    if not any(path.iterdir()):
        return "empty"
    gitdir = _gitdir_of(path)
    if gitdir is not None and gitdir.parent == common / "worktrees":
        return "ours"
    return "foreign"


def _reusable(path: Path, common: Path) -> tuple[Path, str] | None:
    """(git dir, branch) of a ticket worktree that is registered and whole, read from git's
    own files; None sends the caller down the careful path (prune, list, repair, add).

    Written by hand rather than asking git because it runs at every code attempt and the
    careful path costs five git processes (bench/workspaces.py): the checks are what `git
    worktree prune` and `_healthy` look at: our private git dir, pointing back at this
    checkout, not locked (a crash during `worktree add` leaves it locked), HEAD on a branch
    whose ref exists.
    """
    gitdir = _gitdir_of(path)
    if gitdir is None or gitdir.parent != common / "worktrees" or (gitdir / "locked").exists():
        return None
    try:
        back = Path((gitdir / "gitdir").read_text(encoding="utf-8").strip())
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if back.resolve() != (path / ".git").resolve() or not head.startswith("ref: refs/heads/"):
        return None
    branch = head.removeprefix("ref: refs/heads/")
    if not (common / "refs" / "heads" / branch).is_file() and not _packed(common, branch):
        return None
    return gitdir, branch


def _packed(common: Path, branch: str) -> bool:
    try:
        packed = (common / "packed-refs").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return any(line.endswith(f" refs/heads/{branch}") for line in packed.splitlines())


def _healthy(git: Git, entry: _Entry, path: Path) -> bool:
    if entry.locked == _INITIALIZING or entry.prunable is not None:
        return False
    if not (path / ".git").is_file():
        return False
    return git.at(path).ok("rev-parse", "--verify", "-q", "HEAD")


def _branch_exists(git: Git, branch: str) -> bool:
    return git.ok("rev-parse", "--verify", "-q", f"refs/heads/{branch}")


def _ticket_branch(git: Git, tid: str) -> str | None:
    """The branch recorded for the ticket (its title, and so its slug, may have changed)."""
    proc = git.run("config", "--get-regexp", rf"^branch\..*\.{_TICKET_KEY}$", check=False)
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        name = key.removeprefix("branch.").removesuffix(f".{_TICKET_KEY}")
        if value == tid and _branch_exists(git, name):
            return name
    return None


def _drop_entry(git: Git, entry: _Entry) -> None:
    """Unregister a worktree whatever its state (locked, half-created, directory gone)."""
    if entry.locked is not None:
        git.run("worktree", "unlock", str(entry.path), check=False)
    if entry.path.exists():
        git.run("worktree", "remove", "--force", "--force", str(entry.path), check=False)
    git.run("worktree", "prune")


def _why_broken(entry: _Entry) -> str:
    if entry.locked == _INITIALIZING:
        return "left locked 'initializing' by a crash during `git worktree add`"
    if entry.prunable is not None:
        return f"prunable: {entry.prunable}"
    return "no usable checkout"


def _repair(git: Git, common: Path, path: Path, entry: _Entry | None) -> list[str]:
    """Clear what a crash left at `path`, so that `git worktree add` can run."""
    notes = []
    if entry is not None:
        _drop_entry(git, entry)
        notes.append(f"removed broken worktree entry {path} ({_why_broken(entry)})")
    owner = _dir_owner(path, common)
    if owner in ("empty", "ours"):
        shutil.rmtree(path)
        notes.append(f"removed half-created directory {path}")
        git.run("worktree", "prune")
    elif owner == "foreign":
        raise WorkspaceError(
            f"{path} exists and is not a shipline worktree of {git.cwd}: move it away, "
            "or set another worktree root in shipline.toml [workspaces]"
        )
    return notes


def _add(
    git: Git, path: Path, entries: Sequence[_Entry], tid: str, title: str, base: str
) -> tuple[str, list[str]]:
    notes = []
    branch = _ticket_branch(git, tid) or branch_name(tid, title)
    if _branch_exists(git, branch):
        holder = next((e for e in entries if e.branch == branch and e.path != path), None)
        if holder is not None:
            if holder.locked == _INITIALIZING or holder.prunable is not None:
                _drop_entry(git, holder)
                notes.append(f"removed stale worktree entry {holder.path} holding {branch}")
            else:
                raise WorkspaceError(
                    f"branch {branch} of ticket {tid} is checked out at {holder.path}: "
                    f"remove that worktree (`git worktree remove {holder.path}`) and resume"
                )
        notes.append(f"reused existing branch {branch}")
        git.run("worktree", "add", str(path), branch)
    else:
        if not git.ok("rev-parse", "--verify", "-q", f"{base}^{{commit}}"):
            raise WorkspaceError(
                f"base {base!r} names no commit in {git.cwd}: create it, or give the ticket "
                "an existing base branch"
            )
        git.run("worktree", "add", "-b", branch, str(path), base)
    git.run("config", f"branch.{branch}.{_TICKET_KEY}", tid)
    return branch, notes


# --- setup ------------------------------------------------------------------------------------


def read_setup(git_dir: Path) -> SetupRecord | None:
    """The setup record of a worktree, or None when setup never finished."""
    try:
        data = json.loads((git_dir / SETUP_RECORD).read_text())
        return SetupRecord(
            commands=tuple(data["commands"]),
            ok=bool(data["ok"]),
            steps=tuple(SetupStep(**step) for step in data["steps"]),
            log_path=Path(data["log_path"]),
            finished_at=float(data["finished_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _run_setup(
    git_dir: Path,
    path: Path,
    commands: Sequence[str],
    timeout_s: float,
    env: Mapping[str, str] | None,
) -> SetupRecord:
    """Run the setup commands once per worktree (again only if they changed or failed)."""
    with _flock(git_dir / _SETUP_LOCK):
        shown = tuple(redact(command) for command in commands)  # what the record may keep
        existing = read_setup(git_dir)
        if existing is not None and existing.ok and existing.commands == shown:
            return existing
        log_path = git_dir / SETUP_LOG
        steps: list[SetupStep] = []
        failed = ""
        with open(log_path, "w", encoding="utf-8") as log:
            for command in commands:
                result = run_command(command, path, timeout_s, env)
                status = "timed out" if result.timed_out else f"exit {result.exit_code}"
                log.write(f"$ {redact(command)}\n{redact(result.log)}\n")
                log.write(f"[{status}, {result.duration_s:.2f} s]\n")
                duration = round(result.duration_s, 3)
                steps.append(
                    SetupStep(redact(command), result.exit_code, duration, result.timed_out)
                )
                if not result.ok:
                    failed = f"`{redact(command)}` ({status})"
                    break
        record = SetupRecord(shown, not failed, tuple(steps), log_path, time.time())
        write_json_atomic(git_dir / SETUP_RECORD, {**asdict(record), "log_path": str(log_path)})
    if failed:
        raise SetupError(
            f"setup command {failed} failed in {path}; output in {log_path}. Fix the command "
            "in shipline.toml [workspaces] setup (or the repository), then resume the ticket"
        )
    return record


# --- public API -------------------------------------------------------------------------------


def ensure_worktree(
    repo: Path,
    root: Path,
    ticket_id: str | int,
    title: str,
    base: str = "main",
    *,
    setup: Sequence[str] = (),
    setup_timeout_s: float = 900.0,
    env: Mapping[str, str] | None = None,
    git_timeout_s: float = GIT_TIMEOUT_S,
) -> Workspace:
    """The ticket's worktree at `<root>/<ticket id>`: reused, repaired or created, then set up.

    `git_timeout_s` bounds each git command (a GitTimeout past it)."""
    tid = check_ticket_id(ticket_id)
    git = Git(Path(repo).resolve(), timeout_s=git_timeout_s)
    common = _common_dir(git)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    path = root / tid
    reuse = _reusable(path, common)
    if reuse is not None:  # the common case, every code attempt after the first: no git
        git_dir, branch = reuse
        (git_dir / LAST_USED).touch()
        record = (
            _run_setup(git_dir, path, setup, setup_timeout_s, env) if setup else read_setup(git_dir)
        )
        return Workspace(tid, branch, path, git_dir, False, (), record)
    with _flock(common / _REPO_LOCK):
        git.run("worktree", "prune")
        entries = _entries(git)
        entry = _entry_at(entries, path)
        notes: list[str] = []
        if entry is not None and _healthy(git, entry, path):
            created = False
            branch = entry.branch or _ticket_branch(git, tid) or ""
        else:
            notes = _repair(git, common, path, entry)
            branch, more = _add(git, path, _entries(git), tid, title, base)
            notes += more
            created = True
        git_dir = Path(git.at(path).run("rev-parse", "--absolute-git-dir").stdout.strip())
        (git_dir / LAST_USED).touch()
    record = (
        _run_setup(git_dir, path, setup, setup_timeout_s, env) if setup else read_setup(git_dir)
    )
    return Workspace(tid, branch, path, git_dir, created, tuple(notes), record)


def remove_worktree(
    repo: Path,
    root: Path,
    ticket_id: str | int,
    *,
    delete_branch: bool = False,
    git_timeout_s: float = GIT_TIMEOUT_S,
) -> bool:
    """Remove the ticket's worktree (uncommitted changes are lost). True if anything went.

    The branch is kept unless `delete_branch`: its commits cost no disk worth mentioning and
    are the ticket's work.
    """
    tid = check_ticket_id(ticket_id)
    git = Git(Path(repo).resolve(), timeout_s=git_timeout_s)
    common = _common_dir(git)
    path = Path(root).resolve() / tid
    with _flock(common / _REPO_LOCK):
        return _remove(git, common, path, tid, delete_branch)


def _remove(git: Git, common: Path, path: Path, tid: str, delete_branch: bool) -> bool:
    git.run("worktree", "prune")
    entry = _entry_at(_entries(git), path)
    removed = False
    branch = entry.branch if entry is not None else None
    if entry is not None:
        _drop_entry(git, entry)
        removed = True
    if _dir_owner(path, common) in ("empty", "ours"):
        shutil.rmtree(path)
        git.run("worktree", "prune")
        removed = True
    # the code path's per-step base refs (engine/code.py) matter only while the ticket works
    refs = git.run("for-each-ref", "--format=%(refname)", f"refs/shipline/{tid}/").stdout
    for ref in refs.split():
        git.run("update-ref", "-d", ref)
    if delete_branch:
        branch = branch or _ticket_branch(git, tid)
        if branch and _branch_exists(git, branch):
            git.run("branch", "-D", branch)
            removed = True
    return removed


def disk_usage(path: Path) -> int:
    """Bytes allocated under `path` (like `du -s`; symlinks not followed, hard links once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path, onerror=lambda _: None):
        for name in [".", *dirnames, *filenames]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _last_used(path: Path, git_dir: Path | None) -> float:
    candidates = [path]
    if git_dir is not None:
        candidates += [
            git_dir / LAST_USED,
            git_dir / "index",
            git_dir / "HEAD",
            git_dir / "logs/HEAD",
        ]
    times = []
    for candidate in candidates:
        with contextlib.suppress(OSError):
            times.append(candidate.stat().st_mtime)
    return max(times, default=0.0)


def _list(git: Git, common: Path, root: Path) -> list[WorkspaceInfo]:
    entries = {e.path: e for e in _entries(git) if e.path.parent == root}
    infos: list[WorkspaceInfo] = []
    for path, entry in entries.items():
        infos.append(
            WorkspaceInfo(
                ticket_id=path.name,
                path=path,
                branch=entry.branch,
                state="ok" if _healthy(git, entry, path) else "broken",
                disk_bytes=disk_usage(path) if path.exists() else 0,
                last_used=_last_used(path, _gitdir_of(path)),
            )
        )
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child in entries or child.name.startswith("."):
                continue
            owner = _dir_owner(child, common)
            state: WorkspaceState = "orphan" if owner in ("empty", "ours") else "foreign"
            infos.append(
                WorkspaceInfo(
                    ticket_id=child.name,
                    path=child,
                    branch=None,
                    state=state,
                    disk_bytes=disk_usage(child) if child.is_dir() else 0,
                    last_used=_last_used(child, None),
                )
            )
    return sorted(infos, key=lambda i: i.ticket_id)


def list_workspaces(
    repo: Path, root: Path, *, git_timeout_s: float = GIT_TIMEOUT_S
) -> list[WorkspaceInfo]:
    """Every directory under `root` with its state, branch, disk use and last use."""
    git = Git(Path(repo).resolve(), timeout_s=git_timeout_s)
    return _list(git, _common_dir(git), Path(root).resolve())


def prune_plan(
    infos: Sequence[WorkspaceInfo],
    keep: Collection[str],
    retention_s: float,
    now: float,
) -> list[WorkspaceInfo]:
    """Which workspaces to remove (pure): not kept, not foreign, and either broken, orphaned,
    or unused for at least `retention_s`."""
    doomed = []
    for info in infos:
        if info.ticket_id in keep or info.state == "foreign":
            continue
        if info.state in ("broken", "orphan") or now - info.last_used >= retention_s:
            doomed.append(info)
    return doomed


def prune(
    repo: Path,
    root: Path,
    keep: Collection[str | int],
    retention: timedelta | float,
    *,
    now: float | None = None,
    delete_branches: bool = False,
    git_timeout_s: float = GIT_TIMEOUT_S,
) -> list[WorkspaceInfo]:
    """Remove the worktrees of tickets not in `keep` (merged, cancelled, unknown) once unused
    for `retention`, plus orphans and crash leftovers. Returns what was removed."""
    git = Git(Path(repo).resolve(), timeout_s=git_timeout_s)
    common = _common_dir(git)
    root = Path(root).resolve()
    retention_s = retention.total_seconds() if isinstance(retention, timedelta) else retention
    keep_ids = {str(k) for k in keep}
    with _flock(common / _REPO_LOCK):
        git.run("worktree", "prune")
        doomed = prune_plan(_list(git, common, root), keep_ids, retention_s, now or time.time())
        for info in doomed:
            _remove(git, common, info.path, info.ticket_id, delete_branches)
    return doomed
