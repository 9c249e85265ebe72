"""The Python API of shipline: what the CLI, the web board and the MCP server all call.

Reads return pydantic views (`shipline.api.views`); a front-end prints them, renders them or
returns their JSON (`view.model_dump(mode="json")`, the shape of the CLI's `--json`).
Commands delegate to the engine. A front-end imports this package and nothing below it.

    project = open_project(Path.cwd())
    ticket = add_ticket(project, kind="feature", title="Add a --shout flag")
    run(project)
    detail = ticket_detail(project.store, ticket.id)

Names load on first use (PEP 562): `import shipline.api` costs nothing, and a read command
imports the store and its views but never the engine's loop, the providers or Jinja.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from shipline.api.doctor import DoctorFinding, DoctorReport, doctor
    from shipline.api.locks import Unlocked, unlock_tests
    from shipline.api.reports import cost_report, explain_route, workspaces
    from shipline.api.tickets import count_tickets, deliverable_text, list_tickets, ticket_detail
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
    from shipline.engine.worker import OnNotice, Worker

# Where each public name lives. A new name goes here, in __all__ and under TYPE_CHECKING
# (tests/test_cli_speed.py holds the three equal).
_HOMES = {
    "shipline.api.commands": (
        "add_ticket approve cancel init_project read_text_file retry run run_demo start_worker"
    ),
    "shipline.api.doctor": "DoctorFinding DoctorReport doctor",
    "shipline.api.locks": "Unlocked unlock_tests",
    "shipline.api.reports": "cost_report explain_route workspaces",
    "shipline.api.tickets": "count_tickets deliverable_text list_tickets ticket_detail",
    "shipline.api.views": (
        "Approval AttemptView CallView ChildView CostLine CostReport DemoReport DemoTicket "
        "EventView JudgeRunView MergeView PhaseRoute PhaseView ProjectSetup RoleRoute "
        "RouteExplanation TicketDetail TicketSummary VerdictView View WorkspaceList WorkspaceView"
    ),
    "shipline.costs": "GROUP_BY GroupBy",
    "shipline.engine.loop": "OnEvent",
    "shipline.engine.project": "Project open_project",
    "shipline.engine.worker": "OnNotice Worker",
}
_HOME = {name: module for module, names in _HOMES.items() for name in names.split()}

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
    "DoctorFinding",
    "DoctorReport",
    "EventView",
    "GroupBy",
    "JudgeRunView",
    "MergeView",
    "OnEvent",
    "OnNotice",
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
    "count_tickets",
    "deliverable_text",
    "doctor",
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


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'shipline.api' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return __all__
