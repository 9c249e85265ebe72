"""The code path: one attempt of a code phase in the ticket's worktree under the judge, and the
finished ticket through the merge queue.

With `[judge] command` set, the tests, implement and fix-ci phases change a real repository.
Each ticket works in its own git worktree (created at its first code phase, reused after).
A one-shot attempt starts from its step's base commit (`refs/shipline/<id>/base-<step id>`,
set the first time the step runs), so a retried or resumed attempt never builds on a rejected
one. A coding session commits its own work; the judge checks out that commit.

- tests: the new tests are committed and run; they must fail for the right reason
  (judge/failures.py). Then they are locked: each file by its hash, each test by its pytest
  id from the run's JUnit report (judge/proof.py), and the test configuration that could
  deselect them by the digest of its relevant part (workspaces/testconfig.py).
- implement / fix-ci: the locked tests and the locked test configuration must be unchanged on
  disk (else an objection). Then the locked test files run first, with a JUnit report: every
  locked id must be there, passed. One that never ran (missing, skipped, xfailed) while the
  run exits 0 is an objection; a red locked run is red CI, and the whole judge command is not
  run. Then the judge. A red run after implement starts a fix-ci step (with the failure
  excerpt); a red run after fix-ci is an objection.
- after the last phase passes: the merge queue (workspaces/merge.py: squash, rebase, the
  locked tests and the judge again, then fast-forward the target or open a pull request).

Every judge run's full log is written under `.shipline/logs/` (the JUnit report of a tests or
locked run beside it, `.xml`); exit code and duration are returned as rows for the
`judge_runs` table, committed with the verdict. The tests and locked runs always run locally
(`run_judge`): they need the report, which a remote judge cannot give. Without a judge
command none of this runs, and these phases are judged on their deliverable alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipline.atomic import write_json_atomic
from shipline.config import STATE_DIR, Settings
from shipline.judge.excerpt import failure_excerpt
from shipline.judge.failures import tests_command, wrong_failure
from shipline.judge.proof import ReportError, ids_at_lock, junit_env, prove, read_junit
from shipline.judge.runner import Judge, JudgeResult, LocalJudge, run_judge
from shipline.phases.markdown import FileBlockError, is_test_path, parse_changes
from shipline.store import models as m
from shipline.store.db import Store
from shipline.workspaces.edits import EditError, plan_writes
from shipline.workspaces.files import apply_file_blocks, changed_locked_files
from shipline.workspaces.files import lock_files as hash_each
from shipline.workspaces.git import Git
from shipline.workspaces.merge import MergeQueue
from shipline.workspaces.pr import PullRequestError
from shipline.workspaces.testconfig import (
    ABSENT,
    changed_config,
    config_paths,
    describe,
    lock_config,
)
from shipline.workspaces.worktree import UnsafePathError, Workspace, default_root, ensure_worktree

CODE_PHASES = ("tests", "implement", "fix-ci")
DELIVERABLE_DIR = STATE_DIR  # deliverables are committed under .shipline/<ticket id>/

_COMMIT_LINE = re.compile(r"^Commit: ([0-9a-f]{40})$", re.MULTILINE)
# A git conflict marker line; `<<<<<<< SEARCH` and `>>>>>>> REPLACE` are edit blocks (in a
# committed deliverable, or a file about them), not conflicts.
_MARKER = re.compile(r"^(<{7}|>{7})(?! (?:SEARCH|REPLACE)[ \t]*$)( |$)", re.MULTILINE)


@dataclass
class CodeOutcome:
    """What a code phase's attempt left for the verdict transaction."""

    objections: list[str] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)  # judge_runs rows
    events: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)
    locks: dict[str, str] | None = None  # tests phase: path → sha256 of the committed tests
    config_locks: dict[str, str] | None = None  # tests phase: the test configuration's digests
    locked_ids: dict[str, list[str]] | None = None  # tests phase: test file → its pytest ids
    commit: str | None = None
    merge: dict[str, Any] | None = None  # merges row, once the target was fast-forwarded
    handoff: str | None = None  # the ticket needs a human (merge conflict, red after rebase)
    red: str | None = None  # implement stands with red CI: the failure, for fix-ci
    conflict: bool = False  # the handoff is a merge conflict (else a red judge after rebase)


class CodePath:
    """Runs code phases' attempts in the ticket's worktree under the judge, and sends finished
    tickets through the merge queue."""

    def __init__(
        self, settings: Settings, repo: Path, store: Store, judge: Judge | None = None
    ) -> None:
        self.settings = settings
        self.repo = repo
        self.judge = judge or LocalJudge()  # the interface a remote judge plugs into
        configured = settings.workspaces.root
        self.root = (repo / configured) if configured else default_root(repo)
        self.logs = repo / STATE_DIR / "logs"
        ws, merge = settings.workspaces, settings.merge
        self.queue = MergeQueue(
            store,  # for the merge lock: an advisory lock on PostgreSQL
            repo,
            target=merge.target,
            mode=merge.mode,
            remote=merge.remote,
            git_timeout_s=ws.git_timeout_s,
            push_timeout_s=ws.git_network_timeout_s,
        )

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
            git_timeout_s=ws.git_timeout_s,
        )

    def git(self, worktree: Path) -> Git:
        """git in a worktree, committing as git's configured user (else shipline)."""
        ws = self.settings.workspaces
        return Git(worktree, None, ws.git_timeout_s, network_timeout_s=ws.git_network_timeout_s)

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
        config_locks: Mapping[str, str] | None = None,
        locked_ids: Mapping[str, Sequence[str]] | None = None,
        approved: bool = False,
    ) -> CodeOutcome:
        """Put an attempt in the worktree and judge it (see the module doc).

        A one-shot attempt's file blocks are applied on the step's base commit; a session's
        attempt was committed by its session (its text names the commit), which is checked out.
        Implement with red CI stands, with `red` set: the engine starts fix-ci after it.
        `approved`: a human approved these tests as they are, so the tests' right-reason rule
        does not apply (they are still run, committed and locked).
        """
        ws = self.workspace(ticket_id, title)
        git = self.git(ws.path)
        outcome = CodeOutcome()
        if ws.created:
            outcome.events.append(("workspace", f"worktree {ws.path} on branch {ws.branch}"))
        base = self.base_ref(ticket_id, step_id)
        if session:
            commit = session_commit(text)
            if commit is None or not git.has_commit(commit):
                outcome.objections.append(
                    f"{deliverable} names no commit of this worktree: the session's work is lost"
                )
                return outcome
            self.start(ws, ticket_id, step_id, origin, merge_target=False)
            git.run("reset", "-q", "--hard", commit)
        else:
            conflicts = self.start(ws, ticket_id, step_id, origin)
            try:  # every edit and path is checked in memory before any file is written
                writes = plan_writes(
                    ws.path,
                    parse_changes(text),
                    edit_format=self.settings.phase(phase).edit_format,
                    origin=origin,
                    conflicted=conflicts,
                )
                applied = apply_file_blocks(
                    ws.path,
                    writes,
                    f"shipline #{ticket_id} {phase}: attempt {number}",
                    commit=origin != "merge",
                    git_timeout_s=git.timeout_s,
                )
            except EditError as exc:
                outcome.objections += [
                    f"{deliverable} cannot be applied, nothing was written: {problem}"
                    for problem in exc.problems
                ]
                return outcome
            except (FileBlockError, UnsafePathError) as exc:
                outcome.objections.append(f"{deliverable} cannot be applied: {exc}")
                return outcome
            paths = applied.paths
            if origin == "merge":
                unresolved = git.unmerged()
                if unresolved:
                    outcome.objections.append(
                        f"the merge of {self.settings.merge.target} still conflicts in "
                        f"{', '.join(unresolved)}: write each of these files whole, resolved "
                        f"(conflicted at the start: {', '.join(conflicts) or 'none'})"
                    )
                    return outcome
                git.commit_work(
                    f"shipline #{ticket_id} {phase}: merge {self.settings.merge.target}"
                )
        touched = git.changed_paths(base, "HEAD")
        if session:  # the new tests are the changed files that look like tests
            paths = tuple(path for path in touched if is_test_path(path))
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
            log = self._log_path(ticket_id, "tests")
            report = log.with_suffix(".xml")
            result = self._run(
                ws, command, "tests", context, outcome, log_path=log, env=junit_env(report)
            )
            outcome.objections = wrong_failure(
                result,
                self.settings.judge.timeout_s,
                lambda name: _in_repository(ws.path, name),
                budget,
            )
            if approved:  # the human's word stands over the right-reason rule
                outcome.objections = []
            if not outcome.objections:
                self._commit_deliverables(ws, ticket_id, {**earlier, deliverable: text})
                self._lock(ws, paths, report, outcome)
                outcome.commit = git.head()
            return outcome
        config = config_locks or {}
        ids = locked_ids or {}
        changed = changed_locked_files(ws.path, locks)
        changed_cfg = changed_config(ws.path, config)
        if changed or changed_cfg:
            outcome.objections += [
                f"{deliverable} deletes the locked test {path}: make the tests pass without "
                "modifying them"
                if not (ws.path / path).exists()
                else f"{deliverable} changes the locked test {path} (on disk): make the tests "
                "pass without modifying them"
                for path in changed
            ]
            outcome.objections += [_config_objection(deliverable, path) for path in changed_cfg]
            return outcome
        locked = self._locked_run(ws, locks, ids, context, outcome, budget)
        if locked is not None:
            if rewritten := self._rewritten(ws, locks, config, "locked run"):
                outcome.objections.append(rewritten)
                return outcome
            if locked.objection is not None:
                outcome.objections.append(locked.objection)
                return outcome
            if locked.red is not None:  # fail fast: the whole judge command is not run
                if phase != "implement":
                    outcome.objections.append(locked.red)
                    return outcome
                outcome.red = locked.red
                self._commit_deliverables(ws, ticket_id, {deliverable: text})
                outcome.commit = git.head()
                return outcome
        result = self._run(ws, self.settings.judge.command, "judge", context, outcome)
        if rewritten := self._rewritten(ws, locks, config, "judge run"):
            outcome.objections.append(rewritten)
        elif not result.ok and phase != "implement":
            outcome.objections.append(self._red(result, budget))
        else:
            if not result.ok:  # implement stands; fix-ci gets the failure (engine/loop.py)
                outcome.red = self._red(result, budget)
            self._commit_deliverables(ws, ticket_id, {deliverable: text})
            outcome.commit = git.head()
        return outcome

    @staticmethod
    def base_ref(ticket_id: int, step_id: int) -> str:
        return f"refs/shipline/{ticket_id}/base-{step_id}"

    # -- locked tests ------------------------------------------------------------------------

    def restart_tests(self, ticket_id: int, earlier_step: int, new_step: int) -> None:
        """`shipline tests unlock`: the tests phase's new step starts where the earlier one
        started (that step's base commit), not on the unlocked tests and the code built on
        them. Without that base (it never ran here), the new step starts on the worktree."""
        git = Git(self.repo, None, self.settings.workspaces.git_timeout_s)
        earlier = self.base_ref(ticket_id, earlier_step)
        found = git.run("rev-parse", "--verify", "-q", earlier, check=False)
        if found.returncode == 0:
            git.run("update-ref", self.base_ref(ticket_id, new_step), found.stdout.strip())

    def _lock(
        self, ws: Workspace, paths: Sequence[str], report: Path, outcome: CodeOutcome
    ) -> None:
        """Lock the tests phase's accepted tests: their files, their pytest ids (from the run's
        JUnit report: none without one, when the runner is not pytest), and the test
        configuration that could deselect them."""
        outcome.locks = hash_each(ws.path, paths)
        sources = {}
        for path in paths:
            if path.endswith(".py"):
                try:
                    sources[path] = (ws.path / path).read_text(encoding="utf-8", errors="replace")
                except OSError:
                    sources[path] = ""
        try:
            outcome.locked_ids = ids_at_lock(read_junit(report), sources)
        except ReportError:
            outcome.locked_ids = {}
        listed = self.git(ws.path).run("ls-files", "-z").stdout.split("\0")
        tracked = [path for path in listed if path]
        wanted = [path for path in config_paths(paths, tracked) if path not in outcome.locks]
        outcome.config_locks = lock_config(ws.path, wanted)
        outcome.events.append(("locked", _lock_summary(outcome)))

    def _locked_run(
        self,
        ws: Workspace,
        locks: Mapping[str, str],
        locked_ids: Mapping[str, Sequence[str]],
        context: Mapping[str, Any],
        outcome: CodeOutcome,
        budget: int,
    ) -> LockedRun | None:
        """Run the locked test files first, with a JUnit report, and prove every locked id
        passed. None when there is nothing to run apart from the judge: no pytest ids were
        locked and `[tests] command` cannot select files (no `{files}`)."""
        proven = {path: ids for path, ids in locked_ids.items() if ids}
        template = self.settings.tests_command
        selects = "{files}" in template
        if proven:
            files = sorted(proven)
        elif selects and locks:
            files = sorted(locks)
        else:
            return None
        command = tests_command(template, files)
        log = self._log_path(int(context["ticket_id"]), "locked")
        report = log.with_suffix(".xml")
        env = junit_env(report, () if selects else files)  # else pytest gets them through env
        # as a user would run it (the JUnit report aside)
        shown = command if selects else f"PYTEST_ADDOPTS={shlex.quote(shlex.join(files))} {command}"
        result = self._run(
            ws, command, "locked", context, outcome, log_path=log, env=env, shown=shown
        )
        unproven, problem = [], None
        if proven:
            try:
                unproven = prove(proven, read_junit(report))
            except ReportError as exc:
                problem = str(exc)
        if result.ok and not unproven and problem is None:
            return LockedRun()
        fates = [str(u) for u in unproven] + ([problem] if problem else [])
        if result.ok and not any(u.ran for u in unproven):
            return LockedRun(
                objection=(
                    f"the locked tests did not all run and pass in `{shown}` (exit 0): "
                    + "; ".join(fates)
                    + ". The tests are locked: make them pass with the code, never by "
                    "deselecting, skipping, ignoring, renaming or removing them"
                )
            )
        return LockedRun(red=self._red(result, budget, fates, shown))

    @staticmethod
    def _rewritten(
        ws: Workspace, locks: Mapping[str, str], config: Mapping[str, str], run: str
    ) -> str | None:
        """An objection when a run rewrote locked tests or the locked test configuration."""
        changed = changed_locked_files(ws.path, locks) + [
            describe(path) for path in changed_config(ws.path, config)
        ]
        if not changed:
            return None
        return (
            f"the {run} changed what is locked ({', '.join(changed)}): CI must not rewrite the "
            "tests or their configuration"
        )

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
        git = self.git(ws.path)
        ref = self.base_ref(ticket_id, step_id)
        if not git.ok("rev-parse", "--verify", "-q", ref):
            git.run("update-ref", ref, "HEAD")
        git.run("merge", "--abort", check=False)
        git.run("reset", "-q", "--hard", ref)
        git.run("clean", "-q", "-fd")
        if origin != "merge" or not merge_target:
            return []
        target = self.settings.merge.target
        git.run("merge", "-q", "--no-ff", "--no-commit", target, check=False)
        return git.unmerged()

    def _red(
        self,
        result: JudgeResult,
        budget_chars: int,
        locked: Sequence[str] | None = None,
        shown: str | None = None,
    ) -> str:
        """Red CI, with its failure excerpt. `locked`: the run was the locked tests' (run
        first), and these are the locked ids that did not pass, each with its fate."""
        status = (
            f"killed after the {self.settings.judge.timeout_s:g} s timeout"
            if result.timed_out
            else f"exit {result.exit_code}"
        )
        ran = f"`{shown or result.command}` {status} after {result.duration_s:.1f} s"
        if locked is None:
            lead = f"CI is red: {ran}. Fix the code so that it passes; the locked tests are right."
        else:
            fates = f" Locked tests: {'; '.join(locked)}." if locked else ""
            lead = (
                f"CI is red: the locked tests, run first: {ran}.{fates} Fix the code so that "
                "they pass; the locked tests are right."
            )
        return lead + "\n" + failure_excerpt(result.log, budget_chars)

    def _log_path(self, ticket_id: int, purpose: str) -> Path:
        """The next log file of a ticket's runs: `.shipline/logs/ticket-<id>/<n>-<purpose>.log`."""
        folder = self.logs / f"ticket-{ticket_id}"
        folder.mkdir(parents=True, exist_ok=True)
        count = len(list(folder.glob("*.log"))) + 1
        return folder / f"{count:03d}-{purpose}.log"

    def _run(
        self,
        ws: Workspace,
        command: str,
        purpose: str,
        context: Mapping[str, Any],
        outcome: CodeOutcome,
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        shown: str | None = None,
    ) -> JudgeResult:
        """Run a command in the worktree, recorded as a judge run (as `shown`, when what `env`
        adds must be said too). With `env` (a JUnit report to write) it runs locally; else
        through the judge."""
        ticket_id = context["ticket_id"]
        log_path = log_path or self._log_path(ticket_id, purpose)
        commit = self.git(ws.path).head()
        timeout = self.settings.judge.timeout_s
        if env is None:
            result = self.judge.run(command, ws.path, timeout, log_path)
        else:
            result = run_judge(command, ws.path, timeout, env, log_path=log_path)
        outcome.runs.append(
            {
                "ticket_id": ticket_id,
                "step_id": context.get("step_id"),
                "attempt": context.get("attempt"),
                "purpose": purpose,
                "command": shown or command,
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
                f"{purpose}: `{shown or command}` {status} in {result.duration_s:.1f} s "
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
        git = self.git(ws.path)
        git.run("add", "-f", "--", *paths)
        git.commit_staged(f"shipline #{ticket_id}: deliverables {', '.join(texts)}")

    # -- the merge ---------------------------------------------------------------------------

    def merge(
        self,
        *,
        ticket_id: int,
        title: str,
        step_id: int,
        number: int,
        deliverables: Mapping[str, str],
        known_pr: str | None = None,
        locks: Mapping[str, str] | None = None,
        locked_ids: Mapping[str, Sequence[str]] | None = None,
    ) -> CodeOutcome:
        """Commit the deliverables on the ticket's branch, then land it through the merge queue
        (`[merge] mode`: fast-forward the target, or push and open one pull request).

        The deliverables (`.shipline/<id>/`) stay on the ticket's branch: unless `[merge]
        include_deliverables`, they are left out of the commit that lands and committed again
        on the branch after it. A conflict or a red judge leaves the target untouched and sets
        `handoff` (and `red`, what fix-ci gets); so does a pull request that cannot be opened
        (without `red`).
        """
        target = self.settings.merge.target
        ws = self.workspace(ticket_id, title)
        git = self.git(ws.path)
        outcome = CodeOutcome()
        git.run("reset", "-q", "--hard", "HEAD")
        self._commit_deliverables(ws, ticket_id, deliverables)
        context = {"ticket_id": ticket_id, "step_id": step_id, "attempt": number}
        judge = self.settings.judge.command
        include = self.settings.merge.include_deliverables
        keep_out = () if include else (f"{DELIVERABLE_DIR}/{ticket_id}",)

        budget = self.settings.phase("fix-ci").input_token_budget

        def green() -> bool:
            # after the rebase the locked tests run first too; the target's own changes (a
            # conftest another ticket merged) are no objection here, so no lock is compared
            locked = self._locked_run(ws, locks or {}, locked_ids or {}, context, outcome, budget)
            if locked is not None and not locked.green:
                outcome.red = locked.objection or locked.red
                return False
            result = self._run(ws, judge, "merge", context, outcome)
            if not result.ok:
                outcome.red = self._red(result, budget)
            return result.ok

        try:
            landing = self.queue.land(
                ws,
                message=f"shipline #{ticket_id}: {title}",
                who=f"ticket #{ticket_id}",
                judge=green,
                pr_title=f"shipline #{ticket_id}: {title}",
                pr_body=lambda commit: _pr_body(ticket_id, title, commit, judge, include),
                known_pr=known_pr,
                keep_out=keep_out,
            )
        except PullRequestError as exc:
            outcome.handoff = f"merge: {exc}"
            return outcome
        finally:
            if keep_out:  # back on the branch, on top of what landed (or failed to)
                self._commit_deliverables(ws, ticket_id, deliverables)
        if landing.commit is None:
            named = ", ".join(landing.conflicts) or landing.detail
            outcome.handoff = (
                f"merge: rebasing onto {target} conflicts in {named}. Resolve it in {ws.path} "
                f"(branch {ws.branch}): merge {target} into it, resolve, commit, then `shipline "
                f"approve {ticket_id}` (it takes your commit, runs the judge and merges)"
            )
            outcome.conflict = True
            outcome.red = self._conflict_context(git, target, landing.conflicts)
            return outcome
        if not landing.green:
            outcome.handoff = (
                f"merge: the judge is red after rebasing onto {target}; {target} was left "
                f"as it was.\n{outcome.red}"
            )
            return outcome
        commit, pr = landing.commit, landing.pr
        outcome.commit = commit
        outcome.merge = {
            "ticket_id": ticket_id,
            "target": target,
            "commit": commit,
            "mode": self.settings.merge.mode,
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

    def _conflict_context(self, git: Git, target: str, conflicts: Sequence[str]) -> str:
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
                shown = git.run("show", f"{rev}:{path}", check=False)
                body = shown.stdout if shown.returncode == 0 else "(the file does not exist)\n"
                if len(body) > share:
                    body = body[:share] + f"\n… ({len(body) - share} more characters)\n"
                parts.append(f"### {path} on {side}\n```\n{body.rstrip()}\n```")
        return "\n\n".join(parts)

    # -- what a human left in the worktree (approve and retry look before they act) -----------

    def existing(self, ticket_id: int) -> Path | None:
        """The ticket's worktree if it exists (nothing is created)."""
        path = self.root / str(ticket_id)
        return path if (path / ".git").is_file() else None

    def remember(self, ticket_id: int) -> None:
        """Note how shipline leaves the ticket's worktree (its HEAD, and a fingerprint of its
        uncommitted changes), so that what a human does there after is told apart."""
        path = self.existing(ticket_id)
        if path is None:
            return
        git = self.git(path)
        if not git.ok("rev-parse", "--verify", "-q", "HEAD"):
            return
        left = {"head": git.head(), "work": _work_fingerprint(git)}
        write_json_atomic(_git_dir(git) / LEFT_FILE, left)

    def inspect(self, ticket_id: int) -> WorktreeState | None:
        """The ticket's worktree as a human may have left it; None when it does not exist."""
        path = self.existing(ticket_id)
        if path is None:
            return None
        git = self.git(path)
        head = git.head()
        branch = git.run("rev-parse", "--abbrev-ref", "HEAD").stdout.strip()
        try:
            left = json.loads((_git_dir(git) / LEFT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            left = {}
        uncommitted = tuple(
            line[3:].split(" -> ")[-1]
            for line in git.run("status", "--porcelain=v1", "--untracked-files=no").stdout.split(
                "\n"
            )
            if line.strip()
        )
        edited = bool(uncommitted) and left.get("work") != _work_fingerprint(git)
        since = git.run("merge-base", "HEAD", self.settings.merge.target, check=False)
        base = since.stdout.strip() if since.returncode == 0 else "HEAD"
        changed = git.run("diff", "--name-only", base, check=False).stdout.split()
        return WorktreeState(
            path=path,
            branch=branch,
            left=left.get("head"),
            commit=head if left.get("head") not in (None, head) else None,
            edited=uncommitted if edited else (),
            unmerged=tuple(git.unmerged()),
            markers=tuple(_conflict_markers(path, sorted(set(changed)))),
        )


@dataclass(frozen=True)
class WorktreeState:
    """What `approve` and `retry` see in a ticket's worktree (engine/lifecycle.py decides)."""

    path: Path
    branch: str
    left: str | None = None  # HEAD as shipline last left it (None: never noted)
    commit: str | None = None  # HEAD, when it moved since shipline last left it: a human's commit
    edited: tuple[str, ...] = ()  # uncommitted changes that shipline did not leave there
    unmerged: tuple[str, ...] = ()  # a merge (or rebase) in progress left these conflicted
    markers: tuple[str, ...] = ()  # files the ticket changed that hold conflict markers

    @property
    def touched(self) -> bool:
        """A human committed or edited something since shipline last left the worktree."""
        return self.commit is not None or bool(self.edited)


LEFT_FILE = "shipline-left.json"  # in the worktree's git dir: how shipline last left it


def _git_dir(git: Git) -> Path:
    return Path(git.run("rev-parse", "--absolute-git-dir").stdout.strip())


def _work_fingerprint(git: Git) -> str:
    """A hash of the worktree's uncommitted changes to tracked files (untracked ones aside)."""
    status = git.run("status", "--porcelain=v1", "--untracked-files=no").stdout
    diff = git.run("diff", "HEAD", "--binary", check=False).stdout
    return hashlib.sha256(f"{status}\0{diff}".encode()).hexdigest()


@dataclass(frozen=True)
class LockedRun:
    """The locked run's verdict: green, an objection (a locked test never ran while the run
    exited 0: a dodge), or red CI (with the fate of each locked test that did not pass)."""

    objection: str | None = None
    red: str | None = None

    @property
    def green(self) -> bool:
        return self.objection is None and self.red is None


def _config_objection(deliverable: str, path: str) -> str:
    return (
        f"{deliverable} changes {describe(path)}: the test configuration is locked with the "
        "tests (it decides which tests run): leave it as it was and make the tests pass with "
        "the code"
    )


def _lock_summary(outcome: CodeOutcome) -> str:
    """The `locked` event: the test files and ids, and the configuration that exists."""
    tests = outcome.locks or {}
    ids = outcome.locked_ids or {}
    count = sum(len(v) for v in ids.values())
    proof = (
        f"{count} pytest test id(s), each proven after implement"
        if ids
        else ("no pytest report: their runs are judged by exit status")
    )
    config = outcome.config_locks or {}
    present = [describe(path) for path, sha in config.items() if sha != ABSENT]
    absent = len(config) - len(present)
    return (
        f"locked {len(tests)} test file(s): {', '.join(tests)} ({proof}); test configuration: "
        f"{', '.join(present) or 'none'}, and {absent} path(s) locked as absent"
    )


def session_commit(text: str) -> str | None:
    """The commit a session's deliverable names (`Commit: <sha>`), or None."""
    found = _COMMIT_LINE.search(text)
    return found.group(1) if found else None


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


def _pr_body(ticket_id: int, title: str, commit: str, judge: str, deliverables: bool) -> str:
    where = (
        f"under `.shipline/{ticket_id}/` on this branch"
        if deliverables
        else f"in shipline's store (`shipline ticket show {ticket_id} --deliverable NAME`)"
    )
    return (
        f"Ticket #{ticket_id}: {title}\n\n"
        f"Written by shipline. The deliverables (spec, design, plan, tests, review) are {where}. "
        f"`{judge}` was green on {commit[:10]} after rebasing onto the target.\n"
    )


def _in_repository(worktree: Path, name: str) -> bool:
    """Whether a top-level module `name` is part of the repository (or its src/ layout)."""
    return any(
        (base / name).is_dir() or (base / f"{name}.py").is_file()
        for base in (worktree, worktree / "src")
    )
