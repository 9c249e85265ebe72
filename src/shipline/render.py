"""Rich rendering for the CLI: ticket tables, ticket detail, the demo summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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


def styled(status: str | None) -> Text:
    return Text(status or "-", style=STATUS_STYLE.get(status or "", ""))


def money(cost: float | None) -> str:
    return "unknown" if cost is None else f"${cost:.4f}"


def ticket_table(rows: list[dict[str, Any]]) -> Table:
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
        title = row["title"] if row["parent_id"] is None else f"↳ {row['title']}"
        table.add_row(
            str(row["id"]),
            row["kind"],
            str(row["lane"]),
            styled(row["status"]),
            row["phase"] or "-",
            f"{row['phases_done']}/{row['phases_total']}",
            str(row["attempts"]),
            str(row["tokens"]),
            money(row["cost"]),
            title,
        )
    return table


def ticket_panel(detail: dict[str, Any]) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row("status", styled(detail["status"]))
    head.add_row(
        "kind / lane",
        f"{detail['kind']} / lane {detail['lane']}"
        + ("  (sensitive)" if detail["sensitive"] else ""),
    )
    head.add_row("route", " → ".join(detail["route"]))
    if detail["parent_id"]:
        head.add_row("parent", f"#{detail['parent_id']}")
    if detail["depends_on"]:
        head.add_row("depends on", ", ".join(f"#{d}" for d in detail["depends_on"]))
    if detail["children"]:
        head.add_row(
            "children",
            ", ".join(f"#{c['id']} {c['title']} [{c['status']}]" for c in detail["children"]),
        )
    head.add_row("tokens / cost", f"{detail['tokens']} / {money(detail['cost'])}")
    if detail["handoff_reason"]:
        head.add_row("handoff", Text(detail["handoff_reason"], style="yellow"))

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
    for phase in detail["phases"]:
        phases.add_row(
            phase["phase"],
            phase["deliverable"],
            styled(phase["status"]),
            f"{phase['attempts_used']}/{phase['attempts_allowed']}",
            f"{phase['tokens_in']}/{phase['tokens_out']}",
            money(phase["cost"]),
            f"{phase['seconds']:.1f}" if phase["seconds"] is not None else "-",
            ", ".join(phase["models"]) or "-",
        )
    verdicts: list[Text] = []
    for phase in detail["phases"]:
        for attempt in phase["attempts"]:
            verdict = attempt["verdict"]
            if verdict is None:
                state, style = "awaiting verdict", "cyan"
            elif verdict["passed"]:
                state, style = f"passed ({verdict['source']})", "green"
            else:
                state, style = f"rejected ({verdict['source']})", "red"
            line = Text(f"{phase['phase']} #{attempt['number']}: ", style="bold")
            line.append(state, style=style)
            if attempt["truncated"]:
                line.append("  [prompt truncated to budget]", style="dim")
            verdicts.append(line)
            for objection in (verdict or {}).get("objections", []):
                verdicts.append(Text(f"    - {objection}"))
    parts: list[Any] = [
        Panel(head, title=f"#{detail['id']} {detail['title']}", expand=False),
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
