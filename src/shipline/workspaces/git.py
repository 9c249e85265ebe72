"""The one way shipline runs git: `Git(cwd, identity, timeout_s)`, and the few git operations
the code path shares (commit everything, the changed paths, the unmerged ones).

Every git process goes through `Git.run`: in the C locale, never prompting, with nothing on
stdin, in a process group of its own that is killed whole at the time limit. A hung remote or
a stuck hook costs a worker that long and no longer: the timeout is a `GitTimeout` (a
WorkspaceError, so the engine hands the ticket off with the reason) naming the command and
the limit. Local commands get `timeout_s` (`[workspaces] git_timeout_s`); push, fetch and the
other commands that talk to a remote get `network_timeout_s` (`git_network_timeout_s`).

Commits are made as `identity` (name, email); without one, as git's configured user, else as
shipline (probed once per directory, and only when a command writes commits). Errors carry
git's own words, with secrets redacted.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shipline.errors import ShiplineError
from shipline.process import run_argv
from shipline.redact import redact

GIT_TIMEOUT_S = 300.0
GIT_NETWORK_TIMEOUT_S = 600.0
DEFAULT_AUTHOR = ("shipline", "shipline@localhost")
Identity = tuple[str, str]  # (name, email)

_NETWORK = frozenset({"push", "fetch", "pull", "clone", "ls-remote"})
# subcommands that may write a commit (or a merge or rebase step): they need an identity
_COMMITTING = frozenset(
    {"commit", "merge", "rebase", "cherry-pick", "revert", "am", "pull", "stash", "notes"}
)
_configured: dict[Path, bool] = {}  # directory → whether git has a user.email there


@dataclass(frozen=True)
class TreeEntry:
    """One file of a commit's tree: its path, blob sha and size in bytes."""

    path: str
    sha: str
    size: int


class WorkspaceError(ShiplineError):
    """A ticket's worktree cannot be created, repaired, written or removed (or git failed)."""


class GitTimeout(WorkspaceError):
    """A git command did not finish within its time limit; it was killed with its processes."""


class Git:
    """git in one directory, as one identity, with a time limit on every command."""

    def __init__(
        self,
        cwd: Path,
        identity: Identity | None = None,
        timeout_s: float = GIT_TIMEOUT_S,
        *,
        network_timeout_s: float = GIT_NETWORK_TIMEOUT_S,
    ) -> None:
        self.cwd = Path(cwd)
        self.identity = identity
        self.timeout_s = timeout_s
        self.network_timeout_s = network_timeout_s

    def at(self, cwd: Path) -> Git:
        """The same identity and limits, in another directory."""
        return Git(cwd, self.identity, self.timeout_s, network_timeout_s=self.network_timeout_s)

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        errors: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`git ARGS`; a failure (with `check`) is a WorkspaceError, a timeout always is.
        `errors="surrogateescape"` keeps output that is not UTF-8 recoverable as bytes."""
        network = bool(args) and args[0] in _NETWORK
        limit = self.network_timeout_s if network else self.timeout_s
        env = {
            **os.environ,
            **(self._identity_env() if args and args[0] in _COMMITTING else {}),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
        }
        shown = f"git {' '.join(args)}"
        if not self.cwd.is_dir():
            raise WorkspaceError(f"cannot run `{shown}`: {self.cwd} does not exist")
        try:
            done = run_argv(["git", *args], self.cwd, limit, env, input=input, errors=errors)
        except FileNotFoundError:
            raise WorkspaceError(
                "git is not installed (or not on PATH): install it, then try again"
            ) from None
        if done.timed_out:
            key = "git_network_timeout_s" if network else "git_timeout_s"
            why = "the remote did not answer" if network else "git hung (a hook, a lock?)"
            raise GitTimeout(
                redact(
                    f"`{shown}` did not finish in {limit:g} s in {self.cwd}: {why}; it was "
                    f"killed. Check it by hand, or raise [workspaces] {key} in shipline.toml, "
                    "then resume the ticket"
                )
            )
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise WorkspaceError(
                redact(f"`{shown}` failed in {self.cwd} (exit {done.returncode}): {detail}")
            )
        return subprocess.CompletedProcess(
            ["git", *args], done.returncode, done.stdout, done.stderr
        )

    def ok(self, *args: str) -> bool:
        """Whether `git ARGS` exits 0 (a probe: `rev-parse --verify`, `diff --quiet`, …)."""
        return self.run(*args, check=False).returncode == 0

    def _identity_env(self) -> dict[str, str]:
        identity = self.identity
        if identity is None:
            key = self.cwd.resolve()
            if key not in _configured:
                probe = self.run("config", "user.email", check=False)
                _configured[key] = probe.returncode == 0 and bool(probe.stdout.strip())
            if _configured[key]:
                return {}
            identity = DEFAULT_AUTHOR
        name, email = identity
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }

    # -- what the code path shares -------------------------------------------------------------

    def head(self) -> str:
        return self.run("rev-parse", "HEAD").stdout.strip()

    def has_commit(self, sha: str) -> bool:
        return self.ok("cat-file", "-e", f"{sha}^{{commit}}")

    def commit_work(self, message: str) -> str:
        """Commit everything in the worktree (a merge in progress included); the new HEAD."""
        self.run("add", "-A")
        merging = self.ok("rev-parse", "-q", "--verify", "MERGE_HEAD")
        if merging or not self.ok("diff", "--cached", "--quiet"):
            self.run("commit", "-q", "--no-verify", "-m", message)
        return self.head()

    def commit_staged(self, message: str) -> bool:
        """Commit what is staged; False when nothing is."""
        if self.ok("diff", "--cached", "--quiet"):
            return False
        self.run("commit", "-q", "--no-verify", "-m", message)
        return True

    def changed_paths(self, base: str, head: str) -> tuple[str, ...]:
        """Files added or modified between two commits (deleted ones are not listed)."""
        out = self.run("diff", "--name-only", "--diff-filter=AMR", base, head).stdout
        return tuple(line for line in out.splitlines() if line)

    def tree(self, rev: str) -> list[TreeEntry]:
        """Every file (blob) of commit `rev`, with its blob sha and size in bytes; symlinks and
        submodules are left out. Paths are relative to the repository root."""
        out = self.run("ls-tree", "-r", "-l", "-z", "--full-tree", rev, errors="surrogateescape")
        entries = []
        for record in out.stdout.split("\0"):
            meta, tab, path = record.partition("\t")
            fields = meta.split()
            if not tab or len(fields) != 4 or fields[1] != "blob" or fields[0] == "120000":
                continue
            entries.append(TreeEntry(path, fields[2], int(fields[3]) if fields[3] != "-" else 0))
        return entries

    def blobs(self, shas: Sequence[str]) -> dict[str, bytes]:
        """The content of each blob, by sha, in one `git cat-file --batch`; a sha that is
        not a blob of this repository is left out."""
        if not shas:
            return {}
        wanted = list(dict.fromkeys(shas))
        out = self.run(
            "cat-file", "--batch", input="\n".join(wanted) + "\n", errors="surrogateescape"
        ).stdout.encode("utf-8", "surrogateescape")
        found: dict[str, bytes] = {}
        at = 0
        while at < len(out):
            end = out.find(b"\n", at)
            if end < 0:
                break
            header = out[at:end].split()
            at = end + 1
            if len(header) != 3:  # "<sha> missing"
                continue
            size = int(header[2])
            if header[1] == b"blob":
                found[header[0].decode("ascii")] = out[at : at + size]
            at += size + 1
        return found

    def unmerged(self) -> list[str]:
        """The paths a merge or rebase in progress left conflicted."""
        out = self.run("diff", "--name-only", "--diff-filter=U", check=False).stdout
        return sorted(set(out.split()))
