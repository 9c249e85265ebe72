"""The Python API of shipline: what the CLI, the web board and the MCP server all call.

Reads return pydantic views (`shipline.api.views`); a front-end prints them, renders them or
returns their JSON (`view.model_dump(mode="json")`, the shape of the CLI's `--json`).
Commands delegate to the engine. A front-end imports this package and nothing below it.

    project = open_project(Path.cwd())
    ticket = add_ticket(project, kind="feature", title="Add a --shout flag")
    run(project)
    detail = ticket_detail(project.store, ticket.id)
"""

from __future__ import annotations

from shipline.api.commands import (
    add_ticket,
    approve,
    cancel,
    init_project,
    read_text_file,
    retry,
    run,
    run_demo,
    start_worker,
)
from shipline.api.locks import Unlocked, unlock_tests
from shipline.api.reports import cost_report, explain_route, workspaces
from shipline.api.tickets import deliverable_text, list_tickets, ticket_detail
from shipline.api.views import (
    Approval,
    AttemptView,
    CallView,
    ChildView,
    CostLine,
    CostReport,
    DemoReport,
    DemoTicket,
    EventView,
    JudgeRunView,
    MergeView,
    PhaseRoute,
    PhaseView,
    ProjectSetup,
    RoleRoute,
    RouteExplanation,
    TicketDetail,
    TicketSummary,
    VerdictView,
    View,
    WorkspaceList,
    WorkspaceView,
)
from shipline.costs import GROUP_BY, GroupBy
from shipline.engine.loop import OnEvent
from shipline.engine.project import Project, open_project
from shipline.engine.worker import Worker

__all__ = [
    "GROUP_BY",
    "Approval",
    "AttemptView",
    "CallView",
    "ChildView",
    "CostLine",
    "CostReport",
    "DemoReport",
    "DemoTicket",
    "EventView",
    "GroupBy",
    "JudgeRunView",
    "MergeView",
    "OnEvent",
    "PhaseRoute",
    "PhaseView",
    "Project",
    "ProjectSetup",
    "RoleRoute",
    "RouteExplanation",
    "TicketDetail",
    "TicketSummary",
    "Unlocked",
    "VerdictView",
    "View",
    "Worker",
    "WorkspaceList",
    "WorkspaceView",
    "add_ticket",
    "approve",
    "cancel",
    "cost_report",
    "deliverable_text",
    "explain_route",
    "init_project",
    "list_tickets",
    "open_project",
    "read_text_file",
    "retry",
    "run",
    "run_demo",
    "start_worker",
    "ticket_detail",
    "unlock_tests",
    "workspaces",
]
