"""`shipline workspaces`: the ticket worktrees of a project, their disk use, and pruning.

A worktree is kept while its ticket is active; once the ticket is done or cancelled it is
kept for `[workspaces] retention_days`, then pruned. Crash leftovers and orphans (a folder
git no longer knows) are pruned at once; a folder that is not ours is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from shipline.store import models as m
from shipline.workspaces.worktree import WorkspaceInfo, default_root, list_workspaces, prune


def _root(project: Any) -> Any:
    configured = project.settings.workspaces.root
    return (project.root / configured) if configured else default_root(project.root)


def _statuses(project: Any) -> dict[str, str]:
    with project.store.session() as session:
        return {str(i): s for i, s in session.execute(select(m.Ticket.id, m.Ticket.status))}


@dataclass(frozen=True)
class TicketWorktree:
    """A folder under the worktree root, and the status of its ticket ("unknown": none)."""

    info: WorkspaceInfo
    ticket_status: str


def _rows(infos: list[WorkspaceInfo], statuses: dict[str, str]) -> list[TicketWorktree]:
    return [TicketWorktree(info, statuses.get(info.ticket_id, "unknown")) for info in infos]


def inventory(project: Any) -> list[TicketWorktree]:
    """Every folder under the worktree root, with its ticket's status and its disk use."""
    root = _root(project)
    if not root.exists():
        return []
    statuses = _statuses(project)
    limit = project.settings.workspaces.git_timeout_s
    return _rows(list_workspaces(project.root, root, git_timeout_s=limit), statuses)


def prune_workspaces(project: Any) -> list[TicketWorktree]:
    """Remove finished tickets' worktrees past retention, and crash leftovers. Returns them."""
    root = _root(project)
    if not root.exists():
        return []
    statuses = _statuses(project)
    active = {tid for tid, status in statuses.items() if status not in m.FINAL_STATUSES}
    retention = timedelta(days=project.settings.workspaces.retention_days)
    limit = project.settings.workspaces.git_timeout_s
    return _rows(prune(project.root, root, active, retention, git_timeout_s=limit), statuses)
