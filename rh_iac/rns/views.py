"""How the ``invoke rns.*`` commands show RNS records, versions and diffs: rich tables, or JSON for scripts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from rh_iac.errors import RecordCorruptError
    from rh_iac.rns.history import PinNotice, RecordDiff, Version


def listing(entries: list[tuple[str, dict[str, Any] | RecordCorruptError]]) -> list[dict[str, Any]]:
    """One row per record: address, type, stack, status and the pinned version (if rolled back)."""
    rows = []
    for address, record in entries:
        if isinstance(record, dict):
            pin = record.get("pinned")
            rows.append({"address": address, "type": record.get("type"), "stack": record.get("stack"),
                         "status": record.get("status"),
                         "pinned": pin.get("version") if isinstance(pin, dict) else None})
        else:
            rows.append({"address": address, "type": None, "stack": None, "status": f"corrupt: {record}",
                         "pinned": None})
    return rows


def ls(console: Console, entries: list[tuple[str, dict[str, Any] | RecordCorruptError]], as_json: bool) -> None:
    rows = listing(entries)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"RNS records ({len(rows)})")
    for column in ("address", "type", "stack", "status", "pinned"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["address"], row["type"] or "?", row["stack"] or "", row["status"] or "",
                      (row["pinned"] or "")[:12])
    console.print(table)


def show(console: Console, address: str, path: str, record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record, indent=2, sort_keys=True))
        return
    from rich.syntax import Syntax

    console.print(f"[bold]{address}[/bold]  ({path})")
    console.print(Syntax(json.dumps(record, indent=2, sort_keys=True), "json", theme="ansi_dark", word_wrap=True))


def history(console: Console, address: str, versions: list[Version], as_json: bool) -> None:
    if as_json:
        print(json.dumps([{"commit": v.commit, "author": v.author, "time": v.time, "message": v.message,
                           "changes": list(v.changes)} for v in versions], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"history of {address} ({len(versions)} versions, newest first)")
    for column in ("#", "commit", "time", "author", "message", "what changed"):
        table.add_column(column, overflow="fold")
    for i, v in enumerate(versions):
        table.add_row(str(i), v.short, v.time, v.author, v.message, v.summary)
    console.print(table)


def diff(console: Console, result: RecordDiff) -> None:
    console.print(str(result), markup=False, highlight=False)
    if result.text:
        console.print()
        console.print(result.text.rstrip("\n"), markup=False, highlight=False)


def pins(console: Console, notices: list[PinNotice]) -> None:
    """A warning line per resource a deploy or preview builds from a rollback pin."""
    from rich.text import Text

    for notice in notices:
        console.print(Text.assemble(("pinned: ", "yellow"), str(notice)))
