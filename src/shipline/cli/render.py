"""Rich rendering of the API's views for the terminal: tickets, one ticket, cost, routes,
worktrees, the demo summary. The web board renders the same views as HTML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from shipline.api import (
        AttemptView,
        CostLine,
        CostReport,
        DemoReport,
        DoctorReport,
        RouteExplanation,
        TicketDetail,
        TicketSummary,
        WorkspaceView,
    )

STATUS_STYLE = {
    "done": "green",
    "passed": "green",
    "approved": "green",
    "needs-human": "bold yellow",
    "failed": "red",
    "cancelled": "dim",
    "skipped": "dim",
    "running": "cyan",
    "claimed": "cyan",
    "waiting-children": "blue",
}


def context_line(attempt: AttemptView) -> str | None:
    """One line of what an attempt's prompt saw of the repository: `context: main at 3f2a1b0c9d;
    map 38 symbols/610 tok; files ledger/accounts.py (212 tok); cut: ledger/report.py`. None
    when its phase declares no repository context."""
    context = attempt.context
    if context is None:
        return None
    if context.reason is not None:
        return f"context: none ({context.reason})"
    parts = [f"context: {context.source}"]
    shown = context.map
    if shown.files:
        more = f", {shown.left_out} more files cut" if shown.left_out else ""
        parts.append(f"map {shown.symbols} symbols/{shown.tokens} tok{more}")
    if context.files:
        files = ", ".join(
            f"{f.path} ({'outline, ' if f.mode == 'outline' else ''}{f.tokens} tok)"
            for f in context.files
        )
        parts.append(f"files {files}")
    left_out = [path for path in context.cut if path not in {f.path for f in context.files}]
    if left_out:
        parts.append(f"cut: {', '.join(left_out)}")
    return "; ".join(parts)


def styled(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLE.get(status or "", ""))


def ticket_status(ticket: TicketSummary) -> Text:
    """The ticket's status; `done (text only)` when its code phases never touched the repo."""
    if ticket.status == "done" and ticket.code_applied is False:
        return Text("done (text only)", style="yellow")
    return styled(ticket.status)


def _title(ticket: TicketSummary) -> str:
    return ticket.title if ticket.parent_id is None else f"↳ {ticket.title}"


def ticket_table(rows: list[TicketSummary]) -> Table:
    table = Table(title="tickets", expand=False)
    for column in (
        "id",
        "kind",
        "lane",
        "status",
        "phase",
        "phases",
        "attempts",
        "tokens",
        "cost",
        "title",
    ):
        table.add_column(column, justify="right" if column in ("id", "tokens") else "left")
    for row in rows:
        table.add_row(
            str(row.id),
            row.kind,
            str(row.lane),
            ticket_status(row),
            row.phase or "-",
            f"{row.phases_done}/{row.phases_total}",
            str(row.attempts),
            str(row.tokens),
            row.cost_text,
            _title(row),
        )
    return table


def ticket_panel(detail: TicketDetail) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row("status", ticket_status(detail))
    head.add_row(
        "kind / lane",
        f"{detail.kind} / lane {detail.lane}" + ("  (sensitive)" if detail.sensitive else ""),
    )
    head.add_row("route", " → ".join(detail.route))
    if detail.parent_id:
        head.add_row("parent", f"#{detail.parent_id}")
    if detail.depends_on:
        head.add_row("depends on", ", ".join(f"#{d}" for d in detail.depends_on))
    if detail.children:
        head.add_row(
            "children", ", ".join(f"#{c.id} {c.title} [{c.status}]" for c in detail.children)
        )
    head.add_row("tokens / cost", f"{detail.tokens} / {detail.cost_text}")
    merge = detail.merge
    if merge:
        landed = (
            f"PR opened: {merge.url} (into {merge.target}, at {merge.commit[:10]})"
            if merge.url
            else f"merged into {merge.target} at {merge.commit[:10]}"
        )
        head.add_row("landed", landed)
    elif detail.status == "done" and detail.code_applied is False:
        head.add_row(
            "code",
            Text(
                "not applied: the code phases ran text-only (no [judge] command), so nothing "
                "was written to the repository",
                style="yellow",
            ),
        )
    if detail.handoff_reason:
        head.add_row("handoff", Text(detail.handoff_reason, style="yellow"))
    if detail.last_objections:
        last = "\n".join(f"- {o}" for o in detail.last_objections)
        head.add_row("last objection", Text(last, style="yellow"))

    phases = Table(title="phases", expand=False)
    for column in (
        "phase",
        "deliverable",
        "status",
        "attempts",
        "tokens in/out",
        "cost",
        "seconds",
        "model",
    ):
        phases.add_column(column)
    for phase in detail.phases:
        origin = {"ci": " (red CI)", "merge": " (after merge)"}.get(phase.origin or "", "")
        phases.add_row(
            phase.phase + origin,
            phase.deliverable,
            styled(phase.status),
            f"{phase.attempts_used}/{phase.attempts_allowed}",
            f"{phase.tokens_in}/{phase.tokens_out}",
            phase.cost_text,
            f"{phase.seconds:.1f}" if phase.seconds is not None else "-",
            ", ".join(phase.models) or "-",
        )
    verdicts: list[Text] = []
    for phase in detail.phases:
        for attempt in phase.attempts:
            verdict = attempt.verdict
            if verdict is None:
                style = "cyan"
            elif "red CI" in attempt.state:
                style = "yellow"
            else:
                style = "green" if verdict.passed else "red"
            line = Text(f"{phase.phase} #{attempt.number}: ", style="bold")
            line.append(attempt.state, style=style)
            if attempt.account:
                line.append(f" — {attempt.account}", style="")
            if attempt.truncated:
                line.append("  [prompt truncated to budget]", style="dim")
            verdicts.append(line)
            if (seen := context_line(attempt)) is not None:
                verdicts.append(Text(f"    {seen}", style="dim"))
            for objection in verdict.objections if verdict else []:
                verdicts.append(Text(f"    - {objection}"))
    parts: list[RenderableType] = [
        Panel(head, title=f"#{detail.id} {detail.title}", expand=False),
        phases,
    ]
    if verdicts:
        parts.append(Panel(Group(*verdicts), title="attempts and verdicts", expand=False))
    return Group(*parts)


def print_event(console: Console, ticket_id: int, kind: str, message: str) -> None:
    style = {"verdict": "", "handoff": "yellow", "lease-lost": "red", "resume": "cyan"}
    console.print(
        Text(f"#{ticket_id} ", style="bold") + Text(message, style=style.get(kind, "dim"))
    )


def cost_table(report: CostReport) -> Table:
    """`shipline cost`: one row per group and a total; an unknown price reads "unknown"."""
    scope = f"ticket #{report.ticket}" if report.ticket is not None else "all tickets"
    title = f"cost of {scope}" + (f", by {report.by}" if report.by else "")
    table = Table(title=title, expand=False)
    numeric = ("calls", "errors", "fallbacks", "tokens in", "tokens out", "cached")
    for column in (report.by or "", *numeric, "cost"):
        table.add_column(column, justify="right" if column in numeric else "left")

    def cells(line: CostLine) -> list[str]:
        counts = (
            line.calls,
            line.errors,
            line.fallbacks,
            line.input_tokens,
            line.output_tokens,
            line.cached_tokens,
        )
        return [*(str(n) for n in counts), line.cost]

    if report.by is not None:
        for group in report.groups:
            table.add_row(group.key, *cells(group))
        table.add_section()
    table.add_row(Text("total", style="bold"), *cells(report.total))
    return table


def route_panel(explained: RouteExplanation) -> Group:
    """`shipline route explain`: per phase and role, the tier, the provider used first, why."""
    flags = f"{explained.kind} / lane {explained.lane} / {explained.status}"
    if explained.sensitive:
        flags += "  (sensitive: in-house providers only)"
    table = Table(title=f"route of ticket #{explained.ticket_id}: {flags}", expand=False)
    for column in ("phase", "role", "tier", "provider", "model", "why", "fallbacks"):
        table.add_column(column)
    for phase in explained.phases:
        for role in (phase.producer, phase.validator):
            if role is None:
                table.add_row(phase.phase, "validator", "-", "-", "-", "off for this phase", "")
                continue
            provider = role.chosen or ("BLOCKED" if role.blocked else "none ready")
            table.add_row(
                phase.phase if role.role == "producer" else "",
                role.role,
                role.tier,
                Text(provider, style="bold red" if role.blocked else ""),
                role.model or "-",
                Text(role.reason, style="red" if role.blocked else ""),
                ", ".join(role.fallbacks) or "-",
            )
    parts: list[RenderableType] = [table]
    if not explained.runnable:
        parts.append(
            Text(
                "this ticket cannot run as configured: a phase marked BLOCKED goes to "
                "needs-human before any provider call (see its reason)",
                style="bold red",
            )
        )
    return Group(*parts)


def workspace_table(rows: list[WorkspaceView]) -> Table:
    table = Table(title="ticket worktrees")
    for column in ("ticket", "ticket status", "state", "branch", "MiB", "last used", "path"):
        table.add_column(column, justify="right" if column == "MiB" else "left")
    for row in rows:
        table.add_row(
            f"#{row.ticket}",
            styled(row.ticket_status),
            row.state,
            row.branch or "-",
            f"{row.disk_bytes / 2**20:.1f}",
            row.last_used.isoformat()[:19],
            str(row.path),
        )
    total = sum(r.disk_bytes for r in rows) / 2**20
    table.caption = f"{len(rows)} worktree(s), {total:.1f} MiB"
    return table


def demo_table(report: DemoReport) -> Table:
    """`shipline demo`: how far each ticket got, with its attempts, objections and tokens."""
    label = (
        "replay (scripted provider, recorded answers)" if report.replay else "embedded SmolLM2-135M"
    )
    table = Table(title=f"shipline demo — {label}")
    for column in (
        "#",
        "kind",
        "ticket",
        "status",
        "phases reached",
        "attempts",
        "objections",
        "tokens",
        "seconds",
    ):
        table.add_column(column)
    for row in report.tickets:
        table.add_row(
            str(row.id),
            row.kind,
            _title(row),
            ticket_status(row),
            f"{' → '.join(row.reached) or '-'} ({row.phases_done}/{row.phases_total})",
            str(row.attempts),
            str(row.objections),
            str(row.tokens),
            f"{row.seconds:.1f}",
        )
    return table


def doctor_table(report: DoctorReport) -> Table:
    """`shipline doctor`: one row per check, a problem in red with its fix."""
    table = Table(title="shipline doctor", expand=False)
    for column in ("check", "status", "found", "fix"):
        table.add_column(column)
    for finding in report.findings:
        mark = Text("ok", style="green") if finding.ok else Text("problem", style="bold red")
        table.add_row(finding.check, mark, Text(finding.detail), Text(finding.fix))
    return table
