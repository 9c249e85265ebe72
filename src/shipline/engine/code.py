"""Code phases under a judge: the ticket's worktree, file blocks applied, CI run, the merge queue.

With `[judge] command` set, the tests, implement and fix-ci phases change a real repository.
Each ticket works in its own git worktree (created at its first code phase, reused after).
A one-shot attempt starts from its step's base commit (`refs/shipline/<id>/base-<step id>`,
set the first time the step runs), so a retried or resumed attempt never builds on a rejected
one. A coding session commits its own work; the judge checks out that commit.

- tests: the new tests are committed and run; they must fail for the right reason.
- implement / fix-ci: the locked tests must be unchanged on disk. A red judge after implement
  starts a fix-ci step (with the failure excerpt); a red judge after fix-ci is an objection.
- after the last phase passes: the merge queue (squash, rebase, judge again, fast-forward).

Every judge run's full log is written under `.shipline/logs/`; exit code and duration are
returned as rows for the `judge_runs` table, committed with the verdict. Without a judge
command none of this runs, and these phases are judged on their deliverable alone.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipline.config import STATE_DIR, Settings
from shipline.engine.merge_lock import merge_lock
from shipline.judge.excerpt import FailureBlock, failure_excerpt, parse_pytest_log
from shipline.judge.runner import CommandResult, Judge, LocalJudge
from shipline.phases.markdown import FileBlockError, parse_file_blocks
from shipline.store import models as m
from shipline.store.db import Store
from shipline.workspaces.files import _identity_env, apply_file_blocks, changed_locked_files
from shipline.workspaces.files import lock_files as hash_each
from shipline.workspaces.pr import PullRequest, PullRequestError, open_pull_request
from shipline.workspaces.worktree import (
    UnsafePathError,
    Workspace,
    _entries,
    default_root,
    ensure_worktree,
    run_git,
)

CODE_PHASES = ("tests", "implement", "fix-ci")
DELIVERABLE_DIR = STATE_DIR  # deliverables are committed under .shipline/<ticket id>/

_MISSING_MODULE = re.compile(r"No module named '([\w.]+)'")
_CANNOT_IMPORT = re.compile(r"cannot import name '\w+' from '([\w.]+)'")
_BROKEN_TEST_TYPES = ("SyntaxError", "IndentationError", "TabError")


@dataclass
class CodeOutcome:
    """What a code phase's attempt left for the verdict transaction."""

    objections: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # judge_runs rows
    events: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    locks: dict[str, str] | None = None  # tests phase: path → sha256 of the committed tests
    commit: str | None = None
    merge: dict[str, Any] | None = None  # merges row, once the target was fast-forwarded
    handoff: str | None = None  # the ticket needs a human (merge conflict, red after rebase)
    red: str | None = None  # implement stands with red CI: the failure, for fix-ci
    conflict: bool = False  # the handoff is a merge conflict (else a red judge after rebase)


# --- decisions (pure) -------------------------------------------------------------------------


def tests_command(template: str, files: Sequence[str]) -> str:
    """The tests command with `{files}` replaced by the shell-quoted new test files."""
    return template.replace("{files}", shlex.join(files))


def _missing_module(block: FailureBlock) -> str | None:
    """The module an ImportError/ModuleNotFoundError of this block names, or None."""
    for line in reversed(block.messages):
        found = _MISSING_MODULE.search(line) or _CANNOT_IMPORT.search(line)
        if found:
            return found.group(1)
    return None


def wrong_failure(
    result: CommandResult,
    timeout_s: float,
    in_repository: Callable[[str], bool],
    excerpt_chars: int,
) -> list[str]:
    """Objections when new tests do not fail for the right reason (empty: they do).

    Right: failed assertions, errors raised by the code under test, and a test module that
    cannot import a module *of this repository* (the behaviour is missing). Wrong: passing
    tests, a hang, no test run, a test file that does not compile, an import of a package
    that is neither in the repository nor installed, errors in fixtures or setup.
    """
    status = f"`{result.command}` exit {result.exit_code}"
    if result.timed_out:
        return [f"the new tests did not finish: {status} was killed after {timeout_s:g} s"]
    if result.exit_code == 0:
        return [f"the new tests already pass ({status}): they test nothing new"]
    parsed = parse_pytest_log(result.log)
    if not parsed.is_pytest:
        return []  # not pytest: a red run is all that can be asked
    excerpt = failure_excerpt(result.log, excerpt_chars)
    if parsed.summary.startswith("no tests ran") or result.exit_code in (4, 5):
        return [f"no test ran ({status}): check the test file names and paths\n{excerpt}"]
    objections = []
    for block in parsed.blocks:
        where = block.title.removeprefix("ERROR collecting ").strip()
        kind = block.exception_type
        if block.title.startswith("ERROR collecting"):
            module = _missing_module(block)
            if module is not None and in_repository(module.split(".")[0]):
                continue  # imports code that does not exist yet: missing behaviour
            if module is not None:
                objections.append(
                    f"{where} imports {module}, which is neither in the repository nor "
                    f"installed: use only the project and its dependencies\n{excerpt}"
                )
            else:
                objections.append(
                    f"{where} does not collect ({kind or 'collection error'}): fix the test "
                    f"file itself\n{excerpt}"
                )
        elif kind in _BROKEN_TEST_TYPES:
            objections.append(f"{where} fails with {kind}: fix the test itself\n{excerpt}")
        elif block.error_section:
            objections.append(
                f"{where} errors outside the test body ({kind or 'setup error'}), not on an "
                f"assertion: fix the fixture or setup\n{excerpt}"
            )
    return objections


# --- git --------------------------------------------------------------------------------------


@functools.cache
def _identity(cwd: Path) -> tuple[tuple[str, str], ...]:
    """Who commits: git's configured user, else shipline (probed once per worktree)."""
    return tuple(_identity_env(cwd, None).items())


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """git in a worktree, committing as the configured user (else shipline)."""
    return run_git(cwd, *args, check=check, env=dict(_identity(cwd)))


def _head(path: Path) -> str:
    return _git(path, "rev-parse", "HEAD").stdout.strip()


def commit_work(worktree: Path, message: str) -> str:
    """Commit everything in the worktree (a merge in progress included); the new HEAD."""
    _git(worktree, "add", "-A")
    merging = _git(worktree, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False)
    staged = _git(worktree, "diff", "--cached", "--quiet", check=False).returncode != 0
    if staged or merging.returncode == 0:
        _git(worktree, "commit", "-q", "--no-verify", "-m", message)
    return _head(worktree)


def _commit_all_staged(path: Path, message: str) -> bool:
    if _git(path, "diff", "--cached", "--quiet", check=False).returncode == 0:
        return False
    _git(path, "commit", "-q", "--no-verify", "-m", message)
    return True


# --- the judge of code phases ---------------------------------------------------------------


class CodeJudge:
    """Runs code phases' attempts in the ticket's worktree, and merges finished tickets."""

    def __init__(
        self, settings: Settings, repo: Path, store: Store, judge: Judge | None = None
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.store = store  # for the merge lock: an advisory lock on PostgreSQL
        self.judge = judge or LocalJudge()  # the interface a remote judge plugs into
        configured = settings.workspaces.root
        self.root = (repo / configured) if configured else default_root(repo)
        self.logs = repo / STATE_DIR / "logs"

    @property
    def enabled(self) -> bool:
        return bool(self.settings.judge.command.strip())

    def handles(self, phase: str) -> bool:
        return self.enabled and phase in CODE_PHASES

    def merges(self, route: Sequence[str]) -> bool:
        return self.enabled and any(phase in CODE_PHASES for phase in route)

    def workspace(self, ticket_id: int, title: str) -> Workspace:
        ws = self.settings.workspaces
        return ensure_worktree(
            self.repo,
            self.root,
            ticket_id,
            title,
            self.settings.merge.target,
            setup=ws.setup,
            setup_timeout_s=ws.setup_timeout_s,
        )

    # -- attempts ----------------------------------------------------------------------------

    def attempt(
        self,
        *,
        ticket_id: int,
        title: str,
        step_id: int,
        phase: str,
        number: int,
        text: str,
        deliverable: str,
        earlier: Mapping[str, str],
        locks: Mapping[str, str],
        origin: str | None = None,
        session: bool = False,
    ) -> CodeOutcome:
        """Put an attempt in the worktree and judge it (see the module doc).

        A one-shot attempt's file blocks are applied on the step's base commit; a session's
        attempt was committed by its session (its text names the commit), which is checked out.
        Implement with red CI stands, with `red` set: the engine starts fix-ci after it.
        """
        ws = self.workspace(ticket_id, title)
        outcome = CodeOutcome()
        if ws.created:
            outcome.events.append(("workspace", f"worktree {ws.path} on branch {ws.branch}"))
        base = self.base_ref(ticket_id, step_id)
        if session:
            commit = session_commit(text)
            if commit is None or not _has_commit(ws.path, commit):
                outcome.objections.append(
                    f"{deliverable} names no commit of this worktree: the session's work is lost"
                )
                return outcome
            self.start(ws, ticket_id, step_id, origin, merge_target=False)
            _git(ws.path, "reset", "-q", "--hard", commit)
        else:
            conflicts = self.start(ws, ticket_id, step_id, origin)
            try:
                blocks = parse_file_blocks(text)
                applied = apply_file_blocks(
                    ws.path,
                    [(b.path, b.content) for b in blocks],
                    f"shipline #{ticket_id} {phase}: attempt {number}",
                    commit=origin != "merge",
                )
            except (FileBlockError, UnsafePathError) as exc:
                outcome.objections.append(f"{deliverable} cannot be applied: {exc}")
                return outcome
            paths = applied.paths
            if origin == "merge":
                unresolved = _unmerged(ws.path)
                if unresolved:
                    outcome.objections.append(
                        f"the merge of {self.settings.merge.target} still conflicts in "
                        f"{', '.join(unresolved)}: write each of these files whole, resolved "
                        f"(conflicted at the start: {', '.join(conflicts) or 'none'})"
                    )
                    return outcome
                commit_work(
                    ws.path, f"shipline #{ticket_id} {phase}: merge {self.settings.merge.target}"
                )
        touched = _changed_paths(ws.path, base, "HEAD")
        if session:  # the new tests are the changed files that look like tests
            paths = tuple(path for path in touched if _looks_like_test(path))
        marked = _conflict_markers(ws.path, touched)
        if marked:
            outcome.objections.append(
                f"conflict markers remain in {', '.join(marked)}: resolve them"
            )
            return outcome
        budget = self.settings.phase(phase).input_token_budget  # ≈ a quarter of it, in chars
        context = {"ticket_id": ticket_id, "step_id": step_id, "attempt": number}
        if phase == "tests":
            if not paths:
                outcome.objections.append(f"{deliverable} wrote no test file")
                return outcome
            command = tests_command(self.settings.tests_command, paths)
            result = self._run(ws, command, "tests", context, outcome)
            outcome.objections = wrong_failure(
                result,
                self.settings.judge.timeout_s,
                lambda name: _in_repository(ws.path, name),
                budget,
            )
            if not outcome.objections:
                self._commit_deliverables(ws, ticket_id, {**earlier, deliverable: text})
                outcome.locks = hash_each(ws.path, paths)
                outcome.commit = _head(ws.path)
            return outcome
        changed = changed_locked_files(ws.path, locks)
        if changed:
            outcome.objections += [
                f"{deliverable} changes the locked test {path} (on disk): make the tests pass "
                "without modifying them"
                for path in changed
            ]
            return outcome
        result = self._run(ws, self.settings.judge.command, "judge", context, outcome)
        if changed := changed_locked_files(ws.path, locks):
            outcome.objections.append(
                f"the judge run changed the locked tests {', '.join(changed)}: CI must not "
                "rewrite tests"
            )
        elif not result.ok and phase != "implement":
            outcome.objections.append(self._red(result, budget))
        else:
            if not result.ok:  # implement stands; fix-ci gets the failure (engine/loop.py)
                outcome.red = self._red(result, budget)
            self._commit_deliverables(ws, ticket_id, {deliverable: text})
            outcome.commit = _head(ws.path)
        return outcome

    @staticmethod
    def base_ref(ticket_id: int, step_id: int) -> str:
        return f"refs/shipline/{ticket_id}/base-{step_id}"

    def start(
        self,
        ws: Workspace,
        ticket_id: int,
        step_id: int,
        origin: str | None,
        *,
        merge_target: bool = True,
    ) -> list[str]:
        """Reset the worktree to the step's base commit (set now if the step is new).

        A fix-ci step after a failed merge then starts merging the target in (`git merge
        --no-commit`): the attempt resolves what conflicts. Returns the conflicted paths.
        """
        ref = self.base_ref(ticket_id, step_id)
        if _git(ws.path, "rev-parse", "--verify", "-q", ref, check=False).returncode != 0:
            _git(ws.path, "update-ref", ref, "HEAD")
        _git(ws.path, "merge", "--abort", check=False)
        _git(ws.path, "reset", "-q", "--hard", ref)
        _git(ws.path, "clean", "-q", "-fd")
        if origin != "merge" or not merge_target:
            return []
        target = self.settings.merge.target
        _git(ws.path, "merge", "-q", "--no-ff", "--no-commit", target, check=False)
        return _unmerged(ws.path)

    def _red(self, result: CommandResult, budget_chars: int) -> str:
        status = (
            f"killed after the {self.settings.judge.timeout_s:g} s timeout"
            if result.timed_out
            else f"exit {result.exit_code}"
        )
        return (
            f"CI is red: `{result.command}` {status} after {result.duration_s:.1f} s. Fix the "
            "code so that it passes; the locked tests are right.\n"
            + failure_excerpt(result.log, budget_chars)
        )

    def _run(
        self,
        ws: Workspace,
        command: str,
        purpose: str,
        context: Mapping[str, Any],
        outcome: CodeOutcome,
    ) -> CommandResult:
        ticket_id = context["ticket_id"]
        folder = self.logs / f"ticket-{ticket_id}"
        folder.mkdir(parents=True, exist_ok=True)
        count = len(list(folder.glob("*.log"))) + 1
        log_path = folder / f"{count:03d}-{purpose}.log"
        commit = _head(ws.path)
        result = self.judge.run(command, ws.path, self.settings.judge.timeout_s, log_path)
        outcome.runs.append(
            {
                "ticket_id": ticket_id,
                "step_id": context.get("step_id"),
                "attempt": context.get("attempt"),
                "purpose": purpose,
                "command": command,
                "commit": commit,
                "exit_code": result.exit_code,
                "timed_out": result.timed_out,
                "duration_s": round(result.duration_s, 3),
                "log_path": str(log_path),
                "created_at": m.utcnow(),
            }
        )
        status = "killed at the timeout" if result.timed_out else f"exit {result.exit_code}"
        outcome.events.append(
            (
                "judge",
                f"{purpose}: `{command}` {status} in {result.duration_s:.1f} s "
                f"on {commit[:10]} (log: {log_path})",
            )
        )
        return result

    def _commit_deliverables(self, ws: Workspace, ticket_id: int, texts: Mapping[str, str]) -> None:
        """Write accepted deliverables under .shipline/<id>/ and commit what changed."""
        folder = ws.path / DELIVERABLE_DIR / str(ticket_id)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, content in texts.items():
            (folder / name).write_text(content, encoding="utf-8")
            paths.append(f"{DELIVERABLE_DIR}/{ticket_id}/{name}")
        _git(ws.path, "add", "-f", "--", *paths)
        _commit_all_staged(ws.path, f"shipline #{ticket_id}: deliverables {', '.join(texts)}")

    # -- the merge queue ---------------------------------------------------------------------

    def merge(
        self,
        *,
        ticket_id: int,
        title: str,
        step_id: int,
        number: int,
        deliverables: Mapping[str, str],
        known_pr: str | None = None,
    ) -> CodeOutcome:
        """Squash the ticket's branch, rebase it onto the target, judge it, then fast-forward
        the target (`[merge] mode = "merge"`) or push and open one PR (`"pr"`).

        One merge at a time per target branch (engine/merge_lock.py: a file lock on SQLite,
        an advisory lock shared by every machine on PostgreSQL). A conflict or a red judge
        leaves the target untouched and sets `handoff` (and `red`, what fix-ci gets).
        """
        target = self.settings.merge.target
        mode = self.settings.merge.mode
        ws = self.workspace(ticket_id, title)
        outcome = CodeOutcome()
        pr: PullRequest | None = None
        with merge_lock(self.store, self.repo, target, who=f"ticket #{ticket_id}"):
            _git(ws.path, "reset", "-q", "--hard", "HEAD")
            self._commit_deliverables(ws, ticket_id, deliverables)
            base = _git(ws.path, "merge-base", "HEAD", target).stdout.strip()
            if base != _head(ws.path):
                _git(ws.path, "reset", "-q", "--soft", base)
                _commit_all_staged(ws.path, f"shipline #{ticket_id}: {title}")
            rebased = _git(ws.path, "rebase", "-q", target, check=False)
            if rebased.returncode != 0:
                conflicts = _git(
                    ws.path, "diff", "--name-only", "--diff-filter=U", check=False
                ).stdout.split()
                _git(ws.path, "rebase", "--abort", check=False)
                named = ", ".join(conflicts) or (rebased.stderr or rebased.stdout).strip()[:300]
                outcome.handoff = (
                    f"merge: rebasing onto {target} conflicts in {named}; resolve it in "
                    f"{ws.path} (branch {ws.branch}), then `shipline retry {ticket_id}`"
                )
                outcome.conflict = True
                outcome.red = self._conflict_context(ws, target, conflicts)
                return outcome
            context = {"ticket_id": ticket_id, "step_id": step_id, "attempt": number}
            result = self._run(ws, self.settings.judge.command, "merge", context, outcome)
            if not result.ok:
                outcome.red = self._red(result, self.settings.phase("fix-ci").input_token_budget)
                outcome.handoff = (
                    f"merge: the judge is red after rebasing onto {target}; {target} was left "
                    f"as it was.\n{outcome.red}"
                )
                return outcome
            commit = _head(ws.path)
            if mode == "pr":
                try:
                    pr = open_pull_request(
                        ws.path,
                        branch=ws.branch,
                        target=target,
                        remote=self.settings.merge.remote,
                        title=f"shipline #{ticket_id}: {title}",
                        body=_pr_body(ticket_id, title, commit, self.settings.judge.command),
                        known_url=known_pr,
                    )
                except PullRequestError as exc:
                    outcome.handoff = f"merge: {exc}"
                    return outcome
            else:
                self._fast_forward(target, commit)
        outcome.commit = commit
        outcome.merge = {
            "ticket_id": ticket_id,
            "target": target,
            "commit": commit,
            "mode": mode,
            "url": pr.url if pr else None,
            "merged_at": m.utcnow(),
        }
        if pr is not None:
            verb = "opened" if pr.created else "already open"
            outcome.events.append(
                ("pr", f"pull request {pr.url} {verb}: {ws.branch} → {target} at {commit[:10]}")
            )
        else:
            outcome.events.append(
                ("merged", f"{target} fast-forwarded to {commit[:10]} (judge green)")
            )
        return outcome

    def _conflict_context(self, ws: Workspace, target: str, conflicts: Sequence[str]) -> str:
        """What fix-ci needs to resolve a conflict: both sides of every conflicted file."""
        budget = self.settings.phase("fix-ci").input_token_budget * 2  # chars, for both sides
        share = max(400, budget // max(1, 2 * len(conflicts)))
        parts = [
            f"Rebasing this ticket onto {target} conflicts in {', '.join(conflicts)}. "
            f"{target} changed these files since the ticket branched. Write each file whole, "
            f"keeping both {target}'s change and this ticket's."
        ]
        for path in conflicts:
            for side, rev in ((target, target), ("this ticket", "HEAD")):
                shown = _git(ws.path, "show", f"{rev}:{path}", check=False)
                body = shown.stdout if shown.returncode == 0 else "(the file does not exist)\n"
                if len(body) > share:
                    body = body[:share] + f"\n… ({len(body) - share} more characters)\n"
                parts.append(f"### {path} on {side}\n```\n{body.rstrip()}\n```")
        return "\n\n".join(parts)

    def _fast_forward(self, target: str, commit: str) -> None:
        holder = next((e for e in _entries(self.repo) if e.branch == target), None)
        if holder is not None:  # the target is checked out: move its files too
            _git(holder.path, "merge", "-q", "--ff-only", commit)
            return
        old = _git(self.repo, "rev-parse", f"refs/heads/{target}").stdout.strip()
        _git(self.repo, "merge-base", "--is-ancestor", old, commit)
        _git(self.repo, "update-ref", f"refs/heads/{target}", commit, old)


_COMMIT_LINE = re.compile(r"^Commit: ([0-9a-f]{40})$", re.MULTILINE)
_MARKER = re.compile(r"^(<{7}|>{7})( |$)", re.MULTILINE)
_TEST_NAME = re.compile(r"(^|/)(tests?/|test_[^/]*$|[^/]*_test\.[^/]*$|[^/]*\.(test|spec)\.[^/]*$)")


def session_commit(text: str) -> str | None:
    """The commit a session's deliverable names (`Commit: <sha>`), or None."""
    found = _COMMIT_LINE.search(text)
    return found.group(1) if found else None


def _has_commit(worktree: Path, sha: str) -> bool:
    probe = _git(worktree, "cat-file", "-e", f"{sha}^{{commit}}", check=False)
    return probe.returncode == 0


def _changed_paths(worktree: Path, base: str, head: str) -> tuple[str, ...]:
    """Files added or modified between two commits (deleted ones are not listed)."""
    out = _git(worktree, "diff", "--name-only", "--diff-filter=AMR", base, head).stdout
    return tuple(line for line in out.splitlines() if line)


def _unmerged(worktree: Path) -> list[str]:
    out = _git(worktree, "diff", "--name-only", "--diff-filter=U", check=False).stdout
    return sorted(set(out.split()))


def _conflict_markers(worktree: Path, paths: Sequence[str]) -> list[str]:
    """The files among `paths` that still hold a conflict marker line."""
    marked = []
    for path in paths:
        target = worktree / path
        try:
            text = target.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if _MARKER.search(text) and "=======" in text:
            marked.append(path)
    return marked


def _looks_like_test(path: str) -> bool:
    return bool(_TEST_NAME.search(path))


def _pr_body(ticket_id: int, title: str, commit: str, judge: str) -> str:
    return (
        f"Ticket #{ticket_id}: {title}\n\n"
        f"Written by shipline. The deliverables (spec, design, plan, tests, review) are under "
        f"`.shipline/{ticket_id}/` on this branch. `{judge}` was green on {commit[:10]} after "
        "rebasing onto the target.\n"
    )


def _in_repository(worktree: Path, name: str) -> bool:
    """Whether a top-level module `name` is part of the repository (or its src/ layout)."""
    return any(
        (base / name).is_dir() or (base / f"{name}.py").is_file()
        for base in (worktree, worktree / "src")
    )
