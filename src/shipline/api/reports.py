"""Reports over a project: the bill, where each phase's calls would go, the ticket worktrees."""

from __future__ import annotations

from datetime import UTC, datetime

from shipline import costs
from shipline.api.views import CostReport, RouteExplanation, WorkspaceList, WorkspaceView
from shipline.costs import GroupBy
from shipline.engine.explain import explain_ticket
from shipline.engine.project import Project
from shipline.store.db import Store
from shipline.workspaces.inventory import TicketWorktree, inventory, prune_workspaces


def cost_report(
    store: Store, *, ticket_id: int | None = None, by: GroupBy | None = None
) -> CostReport:
    """Cost, tokens, calls, fallbacks and errors from the calls table, grouped `by`."""
    return CostReport.model_validate(costs.cost_report(store, ticket_id=ticket_id, by=by).as_dict())


def explain_route(project: Project, ticket_id: int) -> RouteExplanation:
    """For each phase and role: the tier, the provider called first, why, and the fallbacks.
    Calls no provider."""
    return explain_ticket(project, ticket_id)


def workspaces(project: Project, *, prune: bool = False) -> WorkspaceList:
    """The ticket worktrees; with `prune`, first remove those no longer needed."""
    removed = prune_workspaces(project) if prune else []
    return WorkspaceList(
        workspaces=[_workspace(row) for row in inventory(project)],
        removed=[_workspace(row) for row in removed],
    )


def _workspace(row: TicketWorktree) -> WorkspaceView:
    info = row.info
    return WorkspaceView(
        ticket=info.ticket_id,
        ticket_status=row.ticket_status,
        state=info.state,
        branch=info.branch,
        path=info.path,
        disk_bytes=info.disk_bytes,
        last_used=datetime.fromtimestamp(info.last_used, UTC),
    )
