"""Human-readable output of the operations, with rich: plans, drift, RNS diffs and status tables."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from rich.console import Console
from rich.table import Table

from rh_iac.engines.terraform import Change, Plan
from rh_iac.operations import DeployResult, Preview, ResourceStatus

_ACTION_STYLE = {"create": "green", "update": "yellow", "replace": "magenta", "delete": "red"}
_STATE_STYLE = {"healthy": "green", "degraded": "yellow", "stopped": "red", "not deployed": "dim"}


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _changes_table(title: str, changes: Iterable[Change], *, drift: bool = False) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("action" if not drift else "changed outside rh_iac")
    table.add_column("resource")
    table.add_column("attribute changes")
    for change in changes:
        diffs = change.changed_attributes()
        if change.action in ("create", "delete"):
            diffs = {k: v for k, v in diffs.items() if k in ("name", "workers", "url", "scheduler_address")}
        text = "\n".join(f"{k}: {_short(a)} → {_short(b)}" for k, (a, b) in diffs.items()) or "-"
        action = "drifted" if drift else change.action
        table.add_row(f"[{_ACTION_STYLE.get(change.action, 'white')}]{action}[/]", change.address, text)
    return table


def plan(console: Console, plan: Plan) -> None:
    if plan.drift:
        console.print(_changes_table("Drift: what the engine found changed since the last apply", plan.drift,
                                     drift=True))
    if not plan.has_changes:
        console.print("Nothing to destroy." if plan.destroy else "[green]No changes.[/] Infrastructure matches the stack.")
        return
    console.print(_changes_table("Plan", plan.changes))
    counts = plan.summary()
    console.print("Plan: " + ", ".join(f"{counts[k]} to {k}" for k in ("create", "update", "replace", "delete")))


def stream(console: Console) -> Callable[[str], None]:
    """A callback that prints an engine's output lines as they come (Pulumi's progress), verbatim."""

    def write(line: str) -> None:
        console.print(line.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)

    return write


def preview(console: Console, result: Preview) -> None:
    plan(console, result.plan)
    if not result.rns_changes:
        return
    table = Table(title="RNS records that will change", title_justify="left")
    table.add_column("name")
    table.add_column("field")
    table.add_column("before → after")
    for name, (before, after) in result.rns_changes.items():
        before, after = before or {}, after or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                table.add_row(name, key, f"{_short(before.get(key), 40)} → {_short(after.get(key), 40)}")
    console.print(table)


def deployed(console: Console, result: DeployResult) -> None:
    plan(console, result.plan)
    if result.rns_commit:
        console.print(f"RNS: committed {result.rns_commit[:10]} (rns/ only)")
    else:
        console.print("RNS: unchanged, nothing committed")


def status(console: Console, stack: str, rows: list[ResourceStatus]) -> None:
    table = Table(title=f"Stack {stack}", title_justify="left")
    for column in ("name", "type", "state", "detail"):
        table.add_column(column)
    for row in rows:
        style = _STATE_STYLE.get(row.state, "white")
        table.add_row(row.name, row.kind, f"[{style}]{row.state}[/]", row.detail)
    console.print(table)
