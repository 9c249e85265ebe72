"""The merge queue: one ticket at a time per target branch, squashed, rebased onto the target,
judged again, then landed: the target fast-forwarded (`[merge] mode = "merge"`), or the branch
pushed with one pull request opened (`"pr"`). A conflict or a red judge leaves the target as it
was. The judge is the caller's (`MergeQueue.land` takes it as a function): workspaces know git,
not CI. Paths the caller keeps out (a ticket's deliverables) are left out of the squashed
commit, so they never land; the caller commits them again on the branch afterwards.

The lock. On PostgreSQL it is a session-level advisory lock, held on a connection of its own
for the whole merge. Every worker of every machine that shares the database queues on it, and
the server releases it when that connection closes, so a holder killed outright frees it too.
On SQLite (one machine) it is the file lock in the repository's git common dir, which the
kernel releases when its holder dies.

The advisory lock's key hashes the target branch with the repository's identity: the root
commit of the target's first-parent history. Clones of one repository on several machines
agree on it whatever their paths and remote URLs (ssh or https, a mirror), and it stays put
as the target moves forward. (A remote URL differs between spellings of one remote; a path
differs between machines: either would let two machines merge into one target at once.)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from shipline.errors import ShiplineError
from shipline.store.db import Store
from shipline.workspaces.git import GIT_NETWORK_TIMEOUT_S, GIT_TIMEOUT_S, Git
from shipline.workspaces.pr import PullRequest, open_pull_request
from shipline.workspaces.worktree import Workspace, _common_dir, _entries, _flock

# --- the queue ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Landing:
    """What the merge queue did with a ticket's branch.

    Landed: `green`, and then the target fast-forwarded to `commit` (`pr` is None) or `pr` open
    on it. A conflict: `conflicts` (or git's words in `detail`), `commit` None. Red: `commit`
    was judged and not green."""

    commit: str | None = None
    green: bool = False
    pr: PullRequest | None = None
    conflicts: tuple[str, ...] = ()
    detail: str = ""

    @property
    def conflicted(self) -> bool:
        return self.commit is None


class MergeQueue:
    """Lands tickets' branches on one target of one repository, one at a time."""

    def __init__(
        self,
        store: Store,
        repo: Path,
        *,
        target: str,
        mode: str = "merge",
        remote: str = "origin",
        git_timeout_s: float = GIT_TIMEOUT_S,
        push_timeout_s: float = GIT_NETWORK_TIMEOUT_S,
    ) -> None:
        self.store, self.repo = store, repo  # the store: PostgreSQL's advisory lock
        self.target, self.mode, self.remote = target, mode, remote
        self.git_timeout_s, self.push_timeout_s = git_timeout_s, push_timeout_s

    def land(
        self,
        ws: Workspace,
        *,
        message: str,
        who: str,
        judge: Callable[[], bool],
        pr_title: str = "",
        pr_body: Callable[[str], str] = lambda _commit: "",
        known_pr: str | None = None,
        keep_out: Sequence[str] = (),
    ) -> Landing:
        """Squash the branch's commits since the target into one (`message`), rebase it onto
        the target, `judge()` the result (True: green), then land it. PR mode opens one pull
        request titled `pr_title` (its body: `pr_body(commit)`), or keeps `known_pr`; its
        failure is a PullRequestError. `keep_out`: paths left out of the squashed commit (they
        stay in the worktree, untracked), so neither the target nor the pull request gets them."""
        git = Git(ws.path, timeout_s=self.git_timeout_s)
        with merge_lock(
            self.store, self.repo, self.target, who=who, git_timeout_s=self.git_timeout_s
        ):
            base = git.run("merge-base", "HEAD", self.target).stdout.strip()
            if base != git.head():
                git.run("reset", "-q", "--soft", base)
                if keep_out:
                    git.run("rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", *keep_out)
                git.commit_staged(message)
            rebased = git.run("rebase", "-q", self.target, check=False)
            if rebased.returncode != 0:
                unmerged = git.run("diff", "--name-only", "--diff-filter=U", check=False)
                git.run("rebase", "--abort", check=False)
                detail = (rebased.stderr or rebased.stdout).strip()[:300]
                return Landing(conflicts=tuple(unmerged.stdout.split()), detail=detail)
            green = judge()
            commit = git.head()
            if not green:
                return Landing(commit=commit)
            if self.mode != "pr":
                self._fast_forward(git, commit)
                return Landing(commit=commit, green=True)
            pr = open_pull_request(
                ws.path,
                branch=ws.branch,
                target=self.target,
                remote=self.remote,
                title=pr_title,
                body=pr_body(commit),
                known_url=known_pr,
                push_timeout_s=self.push_timeout_s,
            )
            return Landing(commit=commit, green=True, pr=pr)

    def _fast_forward(self, git: Git, commit: str) -> None:
        repo = git.at(self.repo)
        holder = next((e for e in _entries(repo) if e.branch == self.target), None)
        if holder is not None:  # the target is checked out: move its files too
            git.at(holder.path).run("merge", "-q", "--ff-only", commit)
            return
        old = repo.run("rev-parse", f"refs/heads/{self.target}").stdout.strip()
        repo.run("merge-base", "--is-ancestor", old, commit)
        repo.run("update-ref", f"refs/heads/{self.target}", commit, old)


# --- the lock ----------------------------------------------------------------------------------

_LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE when lock_timeout runs out


class MergeLockError(ShiplineError):
    """The merge lock of a target branch cannot be taken."""


class MergeLockTimeout(MergeLockError):
    """Another merge into the same target held the lock for longer than the timeout."""


def repository_identity(repo: Path, target: str, *, git_timeout_s: float = GIT_TIMEOUT_S) -> str:
    """What names the repository on every machine: the root commit of `target`'s first-parent
    history (else of HEAD's); in a repository without commits, its git dir's path."""
    git = Git(repo, timeout_s=git_timeout_s)
    for rev in (target, "HEAD"):
        proc = git.run("rev-list", "--first-parent", "--max-parents=0", rev, check=False)
        roots = proc.stdout.split()
        if proc.returncode == 0 and roots:
            return roots[-1]
    return str(_common_dir(git))


def merge_lock_key(identity: str, target: str) -> int:
    """The advisory lock key (a signed 64-bit integer) of merges into `target` (pure)."""
    digest = hashlib.sha256(f"shipline-merge:{identity}:{target}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def merge_lock(
    store: Store,
    repo: Path,
    target: str,
    *,
    timeout_s: float | None = None,
    who: str = "",
    git_timeout_s: float = GIT_TIMEOUT_S,
) -> Iterator[None]:
    """Hold the lock of merges into `target` of `repo` for the `with` block.

    `timeout_s`: give up waiting after that long with MergeLockTimeout (None: wait forever).
    `who` says who waits (e.g. `ticket #12`), in the error and in what other waiters see.
    """
    repo = Path(repo).resolve()
    holder = f"{who or 'a merge'} (pid {os.getpid()} on {socket.gethostname()})"
    if store.dialect == "postgresql":
        identity = repository_identity(repo, target, git_timeout_s=git_timeout_s)
        key = merge_lock_key(identity, target)
        with _advisory_lock(store, key, holder, timeout_s) as other:
            if other is not None:
                raise _timed_out(holder, target, repo, timeout_s, other)
            yield
        return
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", target)
    path = _common_dir(Git(repo, timeout_s=git_timeout_s)) / f"shipline-merge-{safe}.lock"
    with _file_lock(path, timeout_s) as taken:
        if not taken:
            other = _read_holder(path)
            raise _timed_out(holder, target, repo, timeout_s, other)
        path.write_text(holder + "\n", encoding="utf-8")  # for a waiter that times out
        yield


def _timed_out(
    holder: str, target: str, repo: Path, timeout_s: float | None, other: str
) -> MergeLockTimeout:
    return MergeLockTimeout(
        f"{holder} waited {timeout_s or 0:g} s for the merge lock of {target} in {repo}, held by "
        f"{other or 'another merge'}; it is still merging: resume the ticket once it is done"
    )


# --- PostgreSQL ------------------------------------------------------------------------------


@contextlib.contextmanager
def _advisory_lock(
    store: Store, key: int, holder: str, timeout_s: float | None
) -> Iterator[str | None]:
    """pg_advisory_lock(key) on a connection of its own: yields None while it is held, or who
    holds it when `timeout_s` ran out first."""
    try:
        conn = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    except SQLAlchemyError as exc:
        raise MergeLockError(f"cannot take the merge lock: {_reason(exc)}") from None
    try:
        other = _acquire(conn, key, holder, timeout_s)
        if other is not None:
            yield other
            return
        try:
            yield None
        finally:
            # A lost connection already dropped the lock; closing it below drops it anyway.
            with contextlib.suppress(SQLAlchemyError):
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        conn.invalidate()  # never back to the pool with our settings on it
        conn.close()


def _acquire(conn: Connection, key: int, holder: str, timeout_s: float | None) -> str | None:
    """None once the lock is held; who holds it ("" if unknown) when the timeout ran out."""
    try:
        _set(conn, "application_name", holder[:63])  # what a waiter that times out reports
        if timeout_s is not None:
            _set(conn, "lock_timeout", f"{max(1, round(timeout_s * 1000))}ms")
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        return None
    except SQLAlchemyError as exc:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise MergeLockError(f"cannot take the merge lock: {_reason(exc)}") from None
    try:
        return _advisory_holder(conn, key)
    except SQLAlchemyError:
        return ""


def _set(conn: Connection, name: str, value: str) -> None:
    conn.execute(text("SELECT set_config(:name, :value, false)"), {"name": name, "value": value})


def _advisory_holder(conn: Connection, key: int) -> str:
    row = conn.execute(
        text(
            "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
            "AND l.objsubid = 1"
        ),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
    ).first()
    if row is None:
        return ""
    name, addr, pid = row
    return name or f"PostgreSQL backend {pid}" + (f" from {addr}" if addr else "")


def _reason(exc: SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip()


# --- a file in the git common dir (SQLite: one machine) ---------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path, timeout_s: float | None) -> Iterator[bool]:
    """`_flock(path)`, given up after `timeout_s`: yields whether the lock is held.

    With a timeout a thread waits on the lock; if the time runs out first, that thread takes
    the lock when it comes free and drops it at once."""
    if timeout_s is None:
        with _flock(path):
            yield True
        return
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with _flock(path):
            taken.set()
            done.wait()

    thread = threading.Thread(target=hold, name=f"shipline {path.name}", daemon=True)
    thread.start()
    try:
        yield taken.wait(timeout_s)
    finally:
        done.set()
        if taken.is_set():
            thread.join()


def _read_holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
