"""PR mode: push the ticket's branch and open one pull request for it, never a second.

A forge is what holds pull requests; `Forge` is the little it must do (find the open pull
request of a branch, create one), and `GitHubCli` does it with the `gh` CLI. Every failure,
of git or of the forge, is a PullRequestError whose message (redacted) the engine can hand
off with.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shipline.errors import ShiplineError
from shipline.process import run_argv
from shipline.redact import redact
from shipline.workspaces.git import GIT_NETWORK_TIMEOUT_S, Git, WorkspaceError

GH_TIMEOUT_S = 120.0
_EXISTS = re.compile(r"already exists:\s*(https?://\S+)")


class PullRequestError(ShiplineError):
    """The branch cannot be pushed, or its pull request cannot be found or opened."""


@dataclass(frozen=True)
class PullRequest:
    url: str
    created: bool  # False: it existed already (recorded by the engine, or found on the forge)


class Forge(Protocol):
    """Where pull requests live."""

    def find(self, branch: str, target: str) -> str | None:
        """The URL of the open pull request of `branch` into `target`, or None."""
        ...

    def create(self, *, branch: str, target: str, title: str, body: str) -> PullRequest:
        """Open a pull request of `branch` (already pushed) into `target`."""
        ...


class GitHubCli:
    """GitHub through `gh`, run in the worktree (gh finds the repository from its remotes)."""

    def __init__(self, worktree: Path, command: str = "gh") -> None:
        self.worktree = worktree
        self.command = command

    def find(self, branch: str, target: str) -> str | None:
        out = self._gh(
            "pr", "list", "--head", branch, "--base", target, "--state", "open", "--json", "url"
        )
        try:
            found = json.loads(out)
            return str(found[0]["url"]) if found else None
        except (ValueError, LookupError, TypeError):
            raise PullRequestError(
                f"`gh pr list` printed no JSON list of pull requests: {redact(out[:300])}"
            ) from None

    def create(self, *, branch: str, target: str, title: str, body: str) -> PullRequest:
        args = ("pr", "create", "--base", target, "--head", branch, "--title", title)
        try:
            out = self._gh(*args, "--body-file", "-", stdin=body)
        except PullRequestError as exc:
            # gh refuses a second pull request and names the first: another worker was quicker.
            if found := _EXISTS.search(str(exc)):
                return PullRequest(found.group(1), created=False)
            raise
        urls = [line for line in out.split() if line.startswith(("https://", "http://"))]
        if not urls:
            raise PullRequestError(f"`gh pr create` printed no URL: {redact(out[:300])}")
        return PullRequest(urls[-1], created=True)

    def _gh(self, *args: str, stdin: str = "") -> str:
        shown = f"`gh {' '.join(args[:2])}`"
        env = {
            **os.environ,
            "GH_PROMPT_DISABLED": "1",
            "GH_NO_UPDATE_NOTIFIER": "1",
            "NO_COLOR": "1",
            "GIT_TERMINAL_PROMPT": "0",
        }
        try:
            proc = run_argv([self.command, *args], self.worktree, GH_TIMEOUT_S, env, input=stdin)
        except FileNotFoundError:
            raise PullRequestError(
                f"PR mode needs the GitHub CLI, and `{self.command}` is not installed (or not on "
                "PATH): install it (https://cli.github.com), run `gh auth login`, then resume "
                "the ticket"
            ) from None
        if proc.timed_out:
            raise PullRequestError(f"{shown} did not answer in {GH_TIMEOUT_S:g} s")
        if proc.returncode != 0:
            detail = redact((proc.stderr or proc.stdout).strip()) or "no output"
            raise PullRequestError(f"{shown} failed (exit {proc.returncode}): {detail}")
        return proc.stdout


def push_branch(
    worktree: Path, remote: str, branch: str, *, timeout_s: float = GIT_NETWORK_TIMEOUT_S
) -> None:
    """Push `branch`, replacing what shipline pushed before (the branch is rebased), but
    never commits pushed by anyone else since (`--force-with-lease --force-if-includes`).
    A remote that does not answer within `timeout_s` is a PullRequestError saying so."""
    try:
        Git(worktree, network_timeout_s=timeout_s).run(
            "push",
            "--quiet",
            "--force-with-lease",
            "--force-if-includes",
            remote,
            f"refs/heads/{branch}:refs/heads/{branch}",
        )
    except WorkspaceError as exc:
        detail = redact(str(exc))
        if "stale info" in detail or "remote ref updated since checkout" in detail:
            detail = (
                f"{remote}/{branch} has commits that shipline did not push: fetch them, decide "
                f"what to keep, then resume the ticket. {detail}"
            )
        raise PullRequestError(f"cannot push {branch} to {remote}: {detail}") from None


def open_pull_request(
    worktree: Path,
    *,
    branch: str,
    target: str,
    remote: str,
    title: str,
    body: str,
    known_url: str | None,
    forge: Forge | None = None,
    push_timeout_s: float = GIT_NETWORK_TIMEOUT_S,
) -> PullRequest:
    """Push `branch` to `remote` and return its pull request into `target`: the one the engine
    recorded (`known_url`), else an open one the forge has, else a new one."""
    push_branch(worktree, remote, branch, timeout_s=push_timeout_s)
    if known_url:
        return PullRequest(known_url, created=False)
    forge = forge if forge is not None else GitHubCli(worktree)
    existing = forge.find(branch, target)
    if existing:
        return PullRequest(existing, created=False)
    return forge.create(branch=branch, target=target, title=title, body=body)
