"""Which commit a phase's repository context is read from: the target branch of the project's
repository before the code phases (and always without a judge), the ticket's worktree for the
code phases once it exists: the commit the attempt starts from (its step's base), else the
worktree's HEAD. The context itself is built by shipline.context.

engine/loop.py imports this module when a prompt needs it, so that starting the CLI does not
load the repository map's modules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shipline.config import Settings
from shipline.context.fit import Candidates
from shipline.context.repository import Revision, default_cache, gather
from shipline.engine.code import CodePath
from shipline.phases.base import PhaseSpec
from shipline.workspaces.git import Git


def phase_candidates(
    settings: Settings,
    root: Path,
    worktrees: Path,
    *,
    ticket_id: int,
    step_id: int,
    phase: PhaseSpec,
    ticket_text: str,
    inputs: Mapping[str, str],
) -> Candidates:
    """What `phase` may see of the repository, before its budget is applied."""
    ws = settings.workspaces
    git = Git(root, timeout_s=ws.git_timeout_s, network_timeout_s=ws.git_network_timeout_s)
    target = settings.merge.target
    revisions = [Revision(target, target), Revision("HEAD", "HEAD")]
    worktree = worktrees / str(ticket_id)
    if phase.context == "planned" and (worktree / ".git").exists():
        git = git.at(worktree)
        name = "the ticket's worktree"
        revisions = [Revision(CodePath.base_ref(ticket_id, step_id), name), Revision("HEAD", name)]
    return gather(phase.context, git, revisions, default_cache(root), ticket_text, inputs)
